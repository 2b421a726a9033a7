"""A second platform service in the end-to-end run, `e2e-billing`: it declares itself an erasure participant and
acknowledges every command with the tenant's policy — except that its database is "down" for the first command of
one tenant's erasure, which it answers `failed`. The run sets ERASURE_MAX_FAILED_ATTEMPTS=1, so that erasure waits
in `needs-attention` until an operator presses Retry in the console; the command comes again and is applied."""
import json
import threading
import uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, Producer

NAME = "e2e-billing"
OUTCOME = {"delete": "erased", "scrub": "scrubbed", "disassociate": "disassociated"}
FAILURE_DETAIL = "billing database unavailable"


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class BillingParticipant:
    def __init__(self, system, failing_tenant):
        prefix = f"{system.namespace}."
        self.commands_topic = prefix + "lethe.erasure.commands.v1"
        self.acks_topic = prefix + "lethe.erasure.acks.v1"
        self.participants_topic = prefix + "lethe.erasure.participants.v1"
        self.failing_tenant = failing_tenant
        self.failed = set()  # erasure ids answered `failed` once
        self.answers = []  # (erasureId, tenantId, outcome), in order
        self.producer = Producer({"bootstrap.servers": system.broker, "partitioner": "murmur2_random", "acks": "all"})
        self.consumer = Consumer({
            "bootstrap.servers": system.broker, "group.id": prefix + f"lethe-participant-{NAME}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        self.running = True
        self.error = None
        self.thread = threading.Thread(target=self._run, name=NAME, daemon=True)

    def start(self):
        self._send(self.participants_topic, NAME, {
            "schemaVersion": "1.0", "participant": NAME, "holds": ["email"], "declaredAt": now()},
            "lethe.ParticipantDeclared")
        self.consumer.subscribe([self.commands_topic])
        self.thread.start()
        return self

    def stop(self):
        self.running = False
        if self.thread.is_alive():
            self.thread.join(10)
        self.consumer.close()

    def _run(self):
        try:
            while self.running:
                message = self.consumer.poll(0.2)
                if message is None or message.error():
                    continue
                command = json.loads(message.value())
                erasure_id = command["erasureId"]
                if command["tenantId"] == self.failing_tenant and erasure_id not in self.failed:
                    self.failed.add(erasure_id)
                    outcome, detail = "failed", FAILURE_DETAIL
                else:
                    outcome, detail = OUTCOME[command["policy"]], None
                body = {"schemaVersion": "1.0", "erasureId": erasure_id, "participant": NAME, "outcome": outcome,
                        "at": now()}
                if detail:
                    body["detail"] = detail
                self._send(self.acks_topic, erasure_id, body, "lethe.ErasureAcknowledged")
                self.answers.append((erasure_id, command["tenantId"], outcome))
                self.consumer.commit(message=message, asynchronous=False)
        except Exception as error:  # the suite reports it; the run then fails waiting for the erasure
            self.error = repr(error)

    def _send(self, topic, key, body, event_type):
        headers = [("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()),
                   ("ce_type", event_type.encode()), ("ce_source", f"/participants/{NAME}".encode()),
                   ("ce_time", now().encode()), ("content-type", b"application/json")]
        self.producer.produce(topic, key=key.encode(), value=json.dumps(body, separators=(",", ":")).encode(),
                              headers=headers)
        if self.producer.flush(30):
            raise RuntimeError(f"{NAME}: the broker did not take a record on {topic}")
