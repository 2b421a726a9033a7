"""Every event the end-to-end run put on its topics, as files for scripts/validate-contracts."""
import os
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from lethe_demo.launcher import Failure

TOPICS = ["lethe.tenants.v1", "lethe.profiles.v1", "lethe.pdr.accounts.v1", "lethe.pdr.reports.v1",
          "lethe.pdr.status.v1", "lethe.erasure.requests.v1", "lethe.erasure.commands.v1", "lethe.erasure.acks.v1",
          "lethe.erasure.participants.v1", "lethe.erasure.completed.v1"]


def dump_event_samples(system, out_dir):
    """Writes every event the run put on its topics as `<EventType>.demo-<topic>-<partition>-<offset>.json`, so
    scripts/validate-contracts checks what the services really produced against docs/schemas (make test passes
    LETHE_CONTRACT_SAMPLES_DIR). Tombstones carry no body and are skipped. Returns the count per event type."""
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    consumer = Consumer({"bootstrap.servers": system.broker, "group.id": f"{system.namespace}.samples",
                         "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        for base in TOPICS:
            topic = f"{system.namespace}.{base}"
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue
            partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
            consumer.assign(partitions)
            remaining = {p.partition for p in partitions}
            deadline = time.monotonic() + 30
            while remaining:
                if time.monotonic() > deadline:
                    raise Failure(f"reading {topic} for contract samples timed out")
                message = consumer.poll(1.0)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(message.partition())
                        continue
                    raise Failure(f"reading {topic}: {message.error()}")
                if message.value() is None:
                    continue
                headers = {name: (value or b"").decode() for name, value in (message.headers() or [])}
                event = headers.get("ce_type", "").removeprefix("lethe.")
                if not event:
                    raise Failure(f"{topic} offset {message.offset()} has no ce_type header")
                name = f"{event}.demo-{base}-{message.partition()}-{message.offset()}.json"
                with open(os.path.join(out_dir, name), "wb") as file:
                    file.write(message.value())
                counts[event] = counts.get(event, 0) + 1
            consumer.unassign()
    finally:
        consumer.close()
    return counts
