"""The example participant against the real dev broker: it declares itself, applies each policy to its own SQLite
table, acknowledges with messages that validate against docs/schemas, re-acknowledges a repeated command without
re-applying it, and dead-letters a malformed one; it fills its table from ProfileFetched (newer wins) and never
stores an account again once a closed erasure suppressed it.

Run: KAFKA_BOOTSTRAP_SERVERS=<address> python3 -m pytest examples/python-participant (make test does this); without
the variable the test starts the dev broker itself through scripts/dev-broker.
"""
import contextlib
import json
import os
import pathlib
import sqlite3
import subprocess
import sys
import time
import uuid

import jsonschema
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMAS = REPO / "docs" / "schemas"


@pytest.fixture(scope="module")
def bootstrap():
    """KAFKA_BOOTSTRAP_SERVERS, or the dev broker: a running one is reused; one started here is stopped after."""
    address = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if address:
        yield address
        return
    broker = str(REPO / "scripts" / "dev-broker")
    already_running = subprocess.run([broker, "status"], capture_output=True).returncode == 0
    result = subprocess.run([broker, "start"], capture_output=True, text=True)
    assert result.returncode == 0, f"scripts/dev-broker start failed: {result.stderr}"
    yield result.stdout.strip().splitlines()[-1]
    if not already_running:
        subprocess.run([broker, "stop"], check=True)


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


def command(erasure_id, tenant, account, policy):
    return {"schemaVersion": "1.0", "erasureId": erasure_id, "tenantId": tenant, "appId": "app-1",
            "accountId": account, "policy": policy, "cause": "atlassian-closed",
            "issuedAt": "2026-01-01T00:00:00.000Z", "deadline": "2026-01-31T00:00:00.000Z"}


@contextlib.contextmanager
def running_participant(bootstrap, tmp_path, name):
    """The participant as a process on topics of a fresh namespace (created here, with their DLQs); yields the
    topic names and its SQLite path, and checks it stops cleanly on SIGTERM."""
    namespace = f"pytest-{uuid.uuid4().hex[:8]}"
    topics = {name: f"{namespace}.lethe.erasure.{name}.v1" for name in ("participants", "commands", "acks")}
    topics["profiles"] = f"{namespace}.lethe.profiles.v1"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [*topics.values(), topics["commands"] + ".dlq", topics["profiles"] + ".dlq"]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in names]).values():
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
        process.terminate()
        try:
            assert process.wait(20) == 0, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()


def test_participant_applies_acknowledges_and_dead_letters(bootstrap, tmp_path):
    # The participant creates its tables at start; seed them before the commands arrive.
    with running_participant(bootstrap, tmp_path, "py-test") as (topics, db_path):
        dlq = topics["commands"] + ".dlq"
        db = sqlite3.connect(db_path)
        db.executemany(
            "INSERT INTO contacts (tenant_id, app_id, account_id, platform_user_id, display_name, email)"
            " VALUES (?, 'app-1', ?, ?, ?, ?)",
            [("t1", "acc-del", "u1", "Ada Lovelace", "ada@example.com"),
             ("t1", "acc-scrub", "u2", "Grace Hopper", "grace@example.com"),
             ("t1", "acc-dis", "u3", "Alan Turing", "alan@example.com"),
             ("t2", "acc-del", "u4", "Ada at another tenant", "ada@other.example")])
        db.commit()

        declared = read_all(bootstrap, topics["participants"], 1)
        assert len(declared) == 1 and declared[0].key() == b"py-test"
        validate(json.loads(declared[0].value()), "ParticipantDeclared")
        assert headers_of(declared[0])["ce_type"] == "lethe.ParticipantDeclared"

        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        commands = [command("er-1", "t1", "acc-del", "delete"), command("er-2", "t1", "acc-scrub", "scrub"),
                    command("er-3", "t1", "acc-dis", "disassociate"), command("er-4", "t1", "acc-none", "delete")]
        for body in commands:
            validate(body, "EraseSubject")
            producer.produce(topics["commands"], key=f"app-1:{body['accountId']}".encode(),
                             value=json.dumps(body).encode(), headers=[("ce_type", b"lethe.EraseSubject")])
        producer.produce(topics["commands"], key=b"app-1:bad", value=b"{not json")
        # The first command again (a re-send): re-acknowledged with the recorded outcome.
        producer.produce(topics["commands"], key=b"app-1:acc-del", value=json.dumps(commands[0]).encode())
        assert producer.flush(30) == 0

        acks = read_all(bootstrap, topics["acks"], 5)
        bodies = [json.loads(message.value()) for message in acks]
        for message, body in zip(acks, bodies):
            validate(body, "ErasureAcknowledged")
            assert headers_of(message)["ce_type"] == "lethe.ErasureAcknowledged"
            assert message.key().decode() == body["erasureId"]
        assert [(b["erasureId"], b["outcome"]) for b in bodies] == [
            ("er-1", "erased"), ("er-2", "scrubbed"), ("er-3", "disassociated"), ("er-4", "nothing-held"),
            ("er-1", "erased")]
        assert all(b["participant"] == "py-test" for b in bodies)

        dead = read_all(bootstrap, dlq, 1)
        assert len(dead) == 1 and dead[0].value() == b"{not json"
        assert headers_of(dead[0])["lethe_error"] == "malformed JSON"

        rows = db.execute("SELECT tenant_id, account_id, platform_user_id, display_name, email FROM contacts"
                          " ORDER BY platform_user_id").fetchall()
        assert rows == [
            ("t1", "acc-scrub", "u2", None, None),   # scrub: row and link kept, personal data gone
            ("t1", None, "u3", None, None),          # disassociate: unlinked from the Atlassian account
            ("t2", "acc-del", "u4", "Ada at another tenant", "ada@other.example"),  # another tenant: untouched
        ]


def profile(tenant, account, name, fetched_at, user_id=None):
    body = {"schemaVersion": "1.1" if user_id else "1.0", "tenantId": tenant, "appId": "app-1",
            "accountId": account, "name": name, "email": f"{account}@example.com", "fetchedAt": fetched_at}
    if user_id:
        body["userId"] = user_id
    validate(body, "ProfileFetched")
    return body


def test_participant_syncs_profiles_and_suppresses_closed_accounts(bootstrap, tmp_path):
    with running_participant(bootstrap, tmp_path, "py-sync") as (topics, db_path):
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

        def send(topic, key, body):
            producer.produce(topic, key=key.encode(), value=json.dumps(body).encode())
            assert producer.flush(30) == 0

        send(topics["profiles"], "app-1:acc-a", profile("t1", "acc-a", "Ada", "2026-01-02T00:00:00.000Z", "u-a"))
        # Older than the one held (an offset, not Z, on purpose): changes nothing.
        send(topics["profiles"], "app-1:acc-a", profile("t1", "acc-a", "Ada (old)", "2026-01-02T00:30:00+02:00"))
        send(topics["profiles"], "app-1:acc-b", profile("t1", "acc-b", "Bob", "2026-01-02T00:00:00Z", "u-b"))
        send(topics["profiles"], "app-1:acc-b", {"schemaVersion": "1.0", "tenantId": "t1", "accountId": "acc-b"})  # no appId
        # The participant reads both topics in one consumer, with no order between them: the command goes out once
        # Bob's profile is stored, else it may be applied first and find nothing held.
        db = sqlite3.connect(db_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not db.execute(
                "SELECT 1 FROM contacts WHERE account_id = 'acc-b'").fetchone():
            time.sleep(0.1)
        assert db.execute("SELECT 1 FROM contacts WHERE account_id = 'acc-b'").fetchone(), "Bob's profile never stored"
        send(topics["commands"], "app-1:acc-b", command("er-b", "t1", "acc-b", "delete"))
        acks = read_all(bootstrap, topics["acks"], 1)
        assert [json.loads(m.value())["outcome"] for m in acks] == ["erased"]
        # A late profile of the closed account: dropped, never stored again.
        send(topics["profiles"], "app-1:acc-b", profile("t1", "acc-b", "Bob", "2026-01-03T00:00:00.000Z", "u-b"))
        send(topics["profiles"], "app-1:acc-c", profile("t1", "acc-c", "Cy", "2026-01-03T00:00:00.000Z", "u-c"))

        deadline = time.monotonic() + 30
        rows = []
        while time.monotonic() < deadline:
            rows = db.execute("SELECT account_id, platform_user_id, display_name FROM contacts"
                              " ORDER BY account_id").fetchall()
            if any(row[0] == "acc-c" for row in rows):
                break
            time.sleep(0.2)
        assert rows == [("acc-a", "u-a", "Ada"), ("acc-c", "u-c", "Cy")]
        dead = read_all(bootstrap, topics["profiles"] + ".dlq", 1)
        assert len(dead) == 1 and headers_of(dead[0])["lethe_error"] == "missing field appId"
        # The closed account is recognised by its digest alone: its accountId is nowhere in the file's bytes.
        data = b"".join(pathlib.Path(str(db_path) + suffix).read_bytes()
                        for suffix in ("", "-wal") if pathlib.Path(str(db_path) + suffix).exists())
        assert b"acc-a" in data, "the byte scan cannot see accountIds"
        assert b"acc-b" not in data


def load_participant_module():
    sys.path.insert(0, str(HERE))
    try:
        import participant
    finally:
        sys.path.remove(str(HERE))
    return participant


def test_suppression_digest_is_the_documented_one():
    """The same vector as Swift's SuppressionDigestTests, so every participant keeps its list in one form."""
    participant = load_participant_module()
    assert participant.suppression_digest("557058:0f4e6a52-2c1b-4d7e-9a31-5be0c2d8e001") == \
        "sha256:c87ac7b8f00b61b235470fbcce2d26d8ae80192093170f01aac1cec10806d486"


def test_a_file_with_raw_suppressed_accountids_is_converted_at_open(tmp_path):
    participant = load_participant_module()
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE suppressed (app_id TEXT NOT NULL, account_id TEXT NOT NULL, PRIMARY KEY (app_id, account_id))")
    old.execute("INSERT INTO suppressed VALUES ('app-1', 'acc-closed-raw')")
    old.commit()
    old.close()
    store = participant.Store(str(path))
    assert store.db.execute("SELECT app_id, account_digest FROM suppressed").fetchall() == \
        [("app-1", participant.suppression_digest("acc-closed-raw"))]
    data = b"".join(pathlib.Path(str(path) + suffix).read_bytes()
                    for suffix in ("", "-wal") if pathlib.Path(str(path) + suffix).exists())
    assert b"acc-closed-raw" not in data
    late = {"tenantId": "t1", "appId": "app-1", "accountId": "acc-closed-raw", "name": "Late",
            "email": "late@example.com", "fetchedAt": "2026-01-03T00:00:00.000Z"}
    assert store.sync(late) == "suppressed"
