"""The example participant against the real dev broker: it declares itself, applies each policy to its own SQLite
table, acknowledges with messages that validate against docs/schemas, re-acknowledges a repeated command without
re-applying it, and dead-letters a malformed one; it fills its table from ProfileFetched (newer wins) and never
stores an account again once a closed erasure suppressed it, nor a profile fetched before an erasure; its acks land
on the partitions murmur2 gives their keys. Bad input is test_participant_bad_input.py's; what both use is in
harness.py and conftest.py.

Run: KAFKA_BOOTSTRAP_SERVERS=<address> python3 -m pytest examples/python-participant (make test does this); without
the variable the tests start the dev broker itself through scripts/dev-broker.
"""

import json
import pathlib
import sqlite3
import time

from confluent_kafka import Producer

from harness import (
    validate,
    read_all,
    headers_of,
    command,
    ce,
    EVENT_OF_TOPIC,
    murmur2,
    running_participant,
    profile,
    wait_for,
    load_participant_module,
)


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
