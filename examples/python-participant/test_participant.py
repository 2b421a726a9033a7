"""The example participant against the real dev broker: it declares itself, applies each policy to its own SQLite
table, acknowledges with messages that validate against docs/schemas, re-acknowledges a repeated command without
re-applying it, and dead-letters a malformed one; it fills its table from ProfileFetched (newer wins) and never
stores an account again once a closed erasure suppressed it, nor a profile fetched before an erasure; its acks land
on the partitions murmur2 gives their keys; records without CloudEvents headers, with a field of the wrong type or shape
(a number, a list, an object, null, empty, a lone surrogate, nesting too deep to parse) or a schemaVersion that is not
"major.minor" go to the DLQ with the reason while it goes on, alive.

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
                             value=json.dumps(body).encode(), headers=ce("lethe.EraseSubject"))
        producer.produce(topics["commands"], key=b"app-1:bad", value=b"{not json", headers=ce("lethe.EraseSubject"))
        # The first command again (a re-send): re-acknowledged with the recorded outcome.
        producer.produce(topics["commands"], key=b"app-1:acc-del", value=json.dumps(commands[0]).encode(),
                         headers=ce("lethe.EraseSubject"))
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
            ("t1", None, "u2", None, None),          # scrub of a closed account: row kept, its accountId gone too
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
            event_type = EVENT_OF_TOPIC["profiles" if topic == topics["profiles"] else "commands"]
            producer.produce(topic, key=key.encode(), value=json.dumps(body).encode(), headers=ce(event_type))
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


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_murmur2_matches_kafkas_vectors():
    """Kafka's own test vectors (the Java client's UtilsTest), as signed 32-bit numbers; then librdkafka's (its
    rdmurmur2.c unit test, the Java results after toPositive), which also cover a tail of one byte (length % 4 == 1)."""
    vectors = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for data, expected in vectors.items():
        value = murmur2(data)
        assert (value - (1 << 32) if value >= 1 << 31 else value) == expected, data
    positive = {b"kafka": 1348980580, b"amqp": 767747138, b"giberish123456789": 257239820}
    for data, expected in positive.items():
        assert murmur2(data) & 0x7fffffff == expected, data


def test_acks_land_on_the_partition_their_key_gives(bootstrap, tmp_path):
    """The contract's partitioner is murmur2: an ack keyed by erasureId must land where any Kafka client would put it."""
    with running_participant(bootstrap, tmp_path, "py-part", partitions={"acks": 6}) as (topics, _db_path):
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        ids = [f"er-part-{index}" for index in range(12)]
        for erasure_id in ids:
            body = command(erasure_id, "t1", f"acc-{erasure_id}", "delete")
            producer.produce(topics["commands"], key=f"app-1:{body['accountId']}".encode(),
                             value=json.dumps(body).encode(), headers=ce("lethe.EraseSubject"))
        assert producer.flush(30) == 0
        acks = read_all(bootstrap, topics["acks"], len(ids))
        assert sorted(m.key().decode() for m in acks) == sorted(ids)
        placed = {m.key().decode(): m.partition() for m in acks}
        expected = {key: (murmur2(key.encode()) & 0x7fffffff) % 6 for key in ids}
        assert placed == expected
        assert len(set(placed.values())) > 1, "every ack on one partition: the check proves little"


def test_records_without_headers_or_with_wrong_types_go_to_the_dlq_and_the_participant_goes_on(bootstrap, tmp_path):
    with running_participant(bootstrap, tmp_path, "py-bad") as (topics, db_path):
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

        def send(short, key, body, headers):
            producer.produce(topics[short], key=key.encode(), value=json.dumps(body).encode(), headers=headers)

        good = command("er-good", "t1", "acc-good", "delete")
        send("commands", "app-1:acc-x", command("er-x", "t1", "acc-x", "delete"), [])  # no CloudEvents headers
        send("commands", "app-1:42", {**command("er-y", "t1", "x", "delete"), "accountId": 42}, ce("lethe.EraseSubject"))
        send("commands", "app-1:acc-z", {**command("er-z", "t1", "acc-z", "delete"), "issuedAt": "not a time"},
             ce("lethe.EraseSubject"))
        send("commands", "app-1:acc-w", {**command("er-w", "t1", "acc-w", "delete"), "cause": ["closed"]},
             ce("lethe.EraseSubject"))
        send("profiles", "app-1:acc-p", {**profile("t1", "acc-p", "P", "2026-01-02T00:00:00Z"), "name": {"x": 1}},
             ce("lethe.ProfileFetched"))
        send("profiles", "app-1:acc-q", {**profile("t1", "acc-q", "Q", "2026-01-02T00:00:00Z"), "fetchedAt": 5},
             ce("lethe.ProfileFetched"))
        send("profiles", "app-1:acc-r", profile("t1", "acc-r", "R", "2026-01-02T00:00:00Z"), ce("lethe.EraseSubject"))
        send("commands", "app-1:acc-good", good, ce("lethe.EraseSubject"))
        assert producer.flush(30) == 0

        acks = read_all(bootstrap, topics["acks"], 1)
        assert [json.loads(m.value())["erasureId"] for m in acks] == ["er-good"]
        dead_commands = read_all(bootstrap, topics["commands"] + ".dlq", 4)
        assert [headers_of(m)["lethe_error"] for m in dead_commands] == [
            "missing CloudEvents header ce_specversion", "field accountId is not a string", "malformed issuedAt",
            "field cause is not a string"]
        dead_profiles = read_all(bootstrap, topics["profiles"] + ".dlq", 3)
        assert [headers_of(m)["lethe_error"] for m in dead_profiles] == [
            "field name is not a string", "field fetchedAt is not a string",
            "unexpected ce_type (expected lethe.ProfileFetched)"]
        assert sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM contacts").fetchone()[0] == 0


def test_fields_of_the_wrong_type_or_shape_go_to_the_dlq_and_the_participant_stays_alive(bootstrap, tmp_path):
    """Every field the participant reads is checked for presence and type before it is used: a bad one is parked on the
    DLQ with a reason naming the field (never its value), not met as an exception deep in the handler."""
    with running_participant(bootstrap, tmp_path, "py-types") as (topics, db_path):
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

        def send(short, key, value):
            body = value if isinstance(value, bytes) else json.dumps(value).encode()
            producer.produce(topics[short], key=key.encode(), value=body, headers=ce(EVENT_OF_TOPIC[short]))

        def bad_command(suffix, **fields):
            body = {**command(f"er-{suffix}", "t1", f"acc-{suffix}", "delete"), **fields}
            send("commands", f"app-1:acc-{suffix}", body)

        bad_command("policy", policy=["delete"])
        bad_command("number", schemaVersion=1)
        bad_command("superscript", schemaVersion="\u00b2.0")      # a digit to str.isdigit, not to int()
        bad_command("v2", schemaVersion="2.ada@example.com")     # a reason must not echo it
        bad_command("surrogate", accountId="\ud800")             # JSON allows it; UTF-8 and SQLite do not
        bad_command("null", erasureId=None)
        bad_command("empty", tenantId="")
        # An unknown field is not an error (a later minor may add it): this one is acknowledged.
        good = {**command("er-good", "t1", "acc-good", "delete"), "deadlineDays": "x"}
        send("commands", "app-1:acc-good", good)
        too_deep = json.dumps(profile("t1", "acc-deep", "D", "2026-01-02T00:00:00Z"))
        too_deep = too_deep.replace('"D"', "[" * 100_000 + "]" * 100_000).encode()
        send("profiles", "app-1:acc-deep", too_deep)
        send("profiles", "app-1:acc-n", {**profile("t1", "acc-n", "N", "2026-01-02T00:00:00Z"), "name": {}})
        send("profiles", "app-1:acc-f", {**profile("t1", "acc-f", "F", "2026-01-02T00:00:00Z"), "fetchedAt": 5})
        send("profiles", "app-1:acc-u", {**profile("t1", "acc-u", "U", "2026-01-02T00:00:00Z"), "userId": 7})
        send("profiles", "app-1:acc-ok", profile("t1", "acc-ok", "Ok", "2026-01-02T00:00:00Z", "u-ok"))
        assert producer.flush(30) == 0

        # One partition: an ack of any bad command would come before the good one's.
        acks = read_all(bootstrap, topics["acks"], 1)
        assert [json.loads(m.value())["erasureId"] for m in acks] == ["er-good"]
        dead_commands = read_all(bootstrap, topics["commands"] + ".dlq", 7)
        assert [headers_of(m)["lethe_error"] for m in dead_commands] == [
            "field policy is not a string", "schemaVersion is not a string",
            "schemaVersion is not of the form major.minor", "schemaVersion is not of the form major.minor",
            "field accountId is not valid Unicode", "missing field erasureId", "field tenantId is empty"]
        dead_profiles = read_all(bootstrap, topics["profiles"] + ".dlq", 4)
        assert [headers_of(m)["lethe_error"] for m in dead_profiles] == [
            "JSON nested too deeply", "field name is not a string", "field fetchedAt is not a string",
            "field userId is not a string"]
        for message in dead_commands + dead_profiles:
            assert headers_of(message)["lethe_source_topic"] in (topics["commands"], topics["profiles"])
        assert dead_profiles[0].value() == too_deep, "the dead letter keeps the record byte for byte"
        db = sqlite3.connect(db_path)
        assert wait_for(lambda: db.execute("SELECT account_id FROM contacts").fetchall() == [("acc-ok",)])
        # Nothing of a bad command was applied: the only erasure recorded, and the only watermark, are the good one's.
        assert db.execute("SELECT erasure_id FROM erasures").fetchall() == [("er-good",)]
        assert db.execute("SELECT COUNT(*) FROM erased").fetchone()[0] == 1


def test_no_profile_fetched_before_an_erasure_comes_back(bootstrap, tmp_path):
    with running_participant(bootstrap, tmp_path, "py-mark") as (topics, db_path):
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})

        def send(short, key, body):
            producer.produce(topics[short], key=key.encode(), value=json.dumps(body).encode(),
                             headers=ce(EVENT_OF_TOPIC[short]))
            assert producer.flush(30) == 0

        db = sqlite3.connect(db_path)

        def contact(account):
            return db.execute("SELECT display_name, platform_user_id FROM contacts WHERE account_id = ?",
                              (account,)).fetchone()

        send("profiles", "app-1:acc-m", profile("t1", "acc-m", "Mo", "2026-01-02T00:00:00.000Z", "u-m"))
        assert wait_for(lambda: contact("acc-m") is not None)
        # A tenant's request (not closed), issued on the 3rd: scrubbed; the link stays.
        send("commands", "app-1:acc-m", command("er-m", "t1", "acc-m", "scrub", cause="tenant-request",
                                                issued_at="2026-01-03T00:00:00.000Z"))
        # Not held yet when its erasure comes (nothing-held): the watermark is left all the same.
        send("commands", "app-1:acc-n", command("er-n", "t1", "acc-n", "delete", cause="tenant-request",
                                                issued_at="2026-01-03T00:00:00.000Z"))
        acks = read_all(bootstrap, topics["acks"], 2)
        assert sorted(json.loads(m.value())["outcome"] for m in acks) == ["nothing-held", "scrubbed"]
        # Fetched before the erasures were issued (they overtook them): dropped, nothing comes back.
        send("profiles", "app-1:acc-m", profile("t1", "acc-m", "Mo (overtaken)", "2026-01-02T12:00:00.000Z", "u-m"))
        send("profiles", "app-1:acc-n", profile("t1", "acc-n", "No (overtaken)", "2026-01-02T12:00:00.000Z", "u-n"))
        # A sentinel after them on the same partition: once it is stored, the two before it were handled.
        send("profiles", "app-1:acc-s", profile("t1", "acc-s", "Sentinel", "2026-01-02T12:00:00.000Z", "u-s"))
        assert wait_for(lambda: contact("acc-s") is not None)
        assert contact("acc-m") == (None, "u-m") and contact("acc-n") is None
        # A genuine sign-in after the erasure: stored again.
        send("profiles", "app-1:acc-m", profile("t1", "acc-m", "Mo again", "2026-01-04T00:00:00.000Z", "u-m"))
        assert wait_for(lambda: contact("acc-m") == ("Mo again", "u-m"))


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
