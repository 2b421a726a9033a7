"""The example participant given bad input on the dev broker: records without CloudEvents headers, with a field of
the wrong type or shape (a number, a list, an object, null, empty, a lone surrogate, nesting too deep to parse) or a
schemaVersion that is not "major.minor" go to the DLQ with the reason while it goes on, alive."""

import json
import sqlite3

from confluent_kafka import Producer

from harness import read_all, headers_of, command, ce, EVENT_OF_TOPIC, running_participant, profile, wait_for


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
