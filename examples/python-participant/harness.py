"""What the example participant's tests share: the contract's schemas, reading a topic, building commands and
profiles with their CloudEvents headers, Kafka's murmur2, and the participant run as a process on a fresh namespace."""
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

import jsonschema
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMAS = REPO / "docs" / "schemas"


def schema(name):
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def validate(body, name):
    jsonschema.validate(body, schema(name), format_checker=jsonschema.FormatChecker())


def read_all(bootstrap, topic, expected, timeout=30.0):
    """Reads `topic` from the beginning until `expected` records arrived or `timeout` passed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                records.append(message)
    finally:
        consumer.close()
    return records


def headers_of(message):
    return {name: (value or b"").decode() for name, value in (message.headers() or [])}


def command(erasure_id, tenant, account, policy, cause="atlassian-closed", issued_at="2026-01-01T00:00:00.000Z"):
    return {"schemaVersion": "1.0", "erasureId": erasure_id, "tenantId": tenant, "appId": "app-1",
            "accountId": account, "policy": policy, "cause": cause,
            "issuedAt": issued_at, "deadline": "2026-01-31T00:00:00.000Z"}


def ce(event_type):
    """The CloudEvents headers docs/contracts.md requires of every record (without them it is dead-lettered)."""
    return [("ce_specversion", b"1.0"), ("ce_id", str(uuid.uuid4()).encode()), ("ce_type", event_type.encode()),
            ("ce_source", b"/pytest"), ("ce_time", b"2026-01-01T00:00:00.000Z"), ("content-type", b"application/json")]


EVENT_OF_TOPIC = {"profiles": "lethe.ProfileFetched", "commands": "lethe.EraseSubject"}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's Utils.murmur2, seed 0x9747b28c) as an unsigned 32-bit number: the
    partitioner the contract names; a key's partition is (murmur2 & 0x7fffffff) % partitions."""
    length = len(data)
    m = 0x5bd1e995
    h = (0x9747b28c ^ length) & 0xffffffff
    for i in range(length // 4):
        k = (int.from_bytes(data[i * 4:i * 4 + 4], "little") * m) & 0xffffffff
        k = ((k ^ (k >> 24)) * m) & 0xffffffff
        h = ((h * m) & 0xffffffff) ^ k
    extra, index = length % 4, length & ~3
    if extra == 3:
        h ^= data[index + 2] << 16
    if extra >= 2:
        h ^= data[index + 1] << 8
    if extra >= 1:
        h = ((h ^ data[index]) * m) & 0xffffffff
    h = ((h ^ (h >> 13)) * m) & 0xffffffff
    return h ^ (h >> 15)


@contextlib.contextmanager
def running_participant(bootstrap, tmp_path, name, partitions=None):
    """The participant as a process on topics of a fresh namespace (created here, with their DLQs, one partition
    each unless `partitions` says otherwise by short name); yields the topic names and its SQLite path, and checks
    it stops cleanly on SIGTERM."""
    namespace = f"pytest-{uuid.uuid4().hex[:8]}"
    topics = {name: f"{namespace}.lethe.erasure.{name}.v1" for name in ("participants", "commands", "acks")}
    topics["profiles"] = f"{namespace}.lethe.profiles.v1"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [*topics.values(), topics["commands"] + ".dlq", topics["profiles"] + ".dlq"]
    counts = {topics[short]: count for short, count in (partitions or {}).items()}
    for future in admin.create_topics([NewTopic(t, counts.get(t, 1), 1) for t in names]).values():
        future.result(30)
    db_path = tmp_path / "participant.sqlite"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PARTICIPANT_NAME=name,
               PARTICIPANT_DB=str(db_path), LETHE_TOPIC_NAMESPACE=namespace, LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, str(HERE / "participant.py")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = process.stdout.readline()
        assert "ready" in ready, \
            f"participant did not start: {ready!r} {process.stderr.read() if process.poll() is not None else ''}"
        yield topics, db_path
    finally:
        # Whatever the test sent it, it is still running: a crash would read the same record again on restart.
        assert process.poll() is None, f"participant exited early: {process.stderr.read()}"
        process.terminate()
        try:
            assert process.wait(20) == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()


def profile(tenant, account, name, fetched_at, user_id=None):
    body = {"schemaVersion": "1.1" if user_id else "1.0", "tenantId": tenant, "appId": "app-1",
            "accountId": account, "name": name, "email": f"{account}@example.com", "fetchedAt": fetched_at}
    if user_id:
        body["userId"] = user_id
    validate(body, "ProfileFetched")
    return body


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def load_participant_module():
    sys.path.insert(0, str(HERE))
    try:
        import participant
    finally:
        sys.path.remove(str(HERE))
    return participant
