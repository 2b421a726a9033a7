#!/usr/bin/env python3
"""A Lethe erasure participant in Python: the whole contract in one small file.

It keeps its own SQLite table of contacts (display name, email) filled from lethe.profiles.v1 (ProfileFetched, one
per sign-in or refresh; a newer fetchedAt wins), declares itself on lethe.erasure.participants.v1, consumes
lethe.erasure.commands.v1 in its own consumer group, applies the tenant's policy (delete / scrub / disassociate) to
its own rows, acknowledges on lethe.erasure.acks.v1, and commits a record only after its change is durable and the
broker acknowledged the ack. It is idempotent by erasureId: a repeated command is re-acknowledged with the outcome
recorded the first time, never applied differently. Every erasure leaves a watermark: a profile fetched before the
erasure was issued (one that overtook it, or came late) is dropped, never stored again; only a sign-in after it
brings the contact back. An account erased because Atlassian reported it closed is suppressed for good, and its
accountId is kept under no policy (a digest recognises it). A record without the CloudEvents headers, or whose fields
have the wrong types, goes to the topic's DLQ with the reason; the participant carries on.

Everything it needs is in docs/asyncapi.yaml and docs/schemas/; it uses no Lethe code.

Environment:
  KAFKA_BOOTSTRAP_SERVERS   required, host:port[,host:port]
  PARTICIPANT_NAME          default "python-example"; also the consumer group
  PARTICIPANT_DB            default ./python-participant.sqlite
  LETHE_TOPIC_NAMESPACE     optional prefix "<ns>." for every topic (tests that share a broker)
  LOG_LEVEL                 default INFO
"""
import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaException, Producer

SCHEMA_MAJOR = 1
# "major.minor" in ASCII digits, as Lethe's SchemaVersion parses it (str.isdigit would also take "²", which int()
# then refuses).
SCHEMA_VERSION = re.compile(r"([0-9]{1,9})\.([0-9]{1,9})")
POLICIES = {"delete", "scrub", "disassociate"}
log = logging.getLogger("python-participant")


def suppression_digest(account_id: str) -> str:
    """What the suppression list keeps instead of a closed account's accountId (docs/contracts.md): it only has to
    recognise the account again, so once the erasure is done the accountId itself is nowhere in this file."""
    return "sha256:" + hashlib.sha256(("lethe.suppression.v1:" + account_id).encode()).hexdigest()


def rfc3339_now() -> str:
    """UTC with milliseconds, as Lethe writes timestamps."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Config:
    def __init__(self, env):
        self.bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if not self.bootstrap:
            raise SystemExit("configuration error: KAFKA_BOOTSTRAP_SERVERS is required but not set")
        self.name = env.get("PARTICIPANT_NAME", "python-example")
        self.db_path = env.get("PARTICIPANT_DB", "./python-participant.sqlite")
        namespace = env.get("LETHE_TOPIC_NAMESPACE", "").strip()
        prefix = f"{namespace}." if namespace else ""
        self.profiles_topic = prefix + "lethe.profiles.v1"
        self.participants_topic = prefix + "lethe.erasure.participants.v1"
        self.commands_topic = prefix + "lethe.erasure.commands.v1"
        self.acks_topic = prefix + "lethe.erasure.acks.v1"
        self.group = prefix + f"lethe-participant-{self.name}"


class Store:
    """The participant's own data. `contacts` is what erasure acts on; `erasures` makes handling idempotent;
    `suppressed` holds the digests of the accounts erased because Atlassian reported them closed."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # Erased names and emails are overwritten in the file, not left in free pages.
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS contacts (
                id INTEGER PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                app_id TEXT NOT NULL,
                account_id TEXT,            -- NULL once disassociated
                platform_user_id TEXT,      -- ProfileFetched's userId (1.1); NULL from a 1.0 producer
                display_name TEXT,
                email TEXT,
                fetched_at INTEGER          -- ms since the epoch of the profile's fetchedAt
            );
            CREATE UNIQUE INDEX IF NOT EXISTS contacts_by_account ON contacts (tenant_id, app_id, account_id)
                WHERE account_id IS NOT NULL;
            CREATE TABLE IF NOT EXISTS suppressed (
                app_id TEXT NOT NULL,
                account_digest TEXT NOT NULL,   -- suppression_digest(accountId), never the accountId itself
                PRIMARY KEY (app_id, account_digest)
            );
            CREATE TABLE IF NOT EXISTS erasures (
                erasure_id TEXT PRIMARY KEY,
                outcome TEXT NOT NULL,
                applied_at TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS erased (
                tenant_id TEXT NOT NULL,
                app_id TEXT NOT NULL,
                account_digest TEXT NOT NULL,   -- suppression_digest(accountId)
                erased_through INTEGER NOT NULL, -- ms since the epoch of the latest erasure's issuedAt
                PRIMARY KEY (tenant_id, app_id, account_digest)
            );
            """
        )
        self._convert_raw_suppressions()

    def _convert_raw_suppressions(self):
        """A file from before the digests keeps raw accountIds in `suppressed (app_id, account_id)`: convert it once
        (secure_delete zeroes the dropped table's pages), then empty the WAL."""
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(suppressed)")]
        if "account_id" not in columns:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute("SELECT app_id, account_id FROM suppressed").fetchall()
            self.db.execute("DROP TABLE suppressed")
            self.db.execute("""CREATE TABLE suppressed (app_id TEXT NOT NULL, account_digest TEXT NOT NULL,
                                   PRIMARY KEY (app_id, account_digest))""")
            self.db.executemany("INSERT OR IGNORE INTO suppressed (app_id, account_digest) VALUES (?, ?)",
                                [(app_id, suppression_digest(account_id)) for app_id, account_id in rows])
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def sync(self, profile):
        """Stores a ProfileFetched unless the account is suppressed, it was fetched before an erasure of it was
        issued, or a newer profile is held; returns what happened: "stored", "stale", "erased" or "suppressed"."""
        fetched = epoch_millis(profile["fetchedAt"])
        digest = suppression_digest(profile["accountId"])
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if self.db.execute("SELECT 1 FROM suppressed WHERE app_id = ? AND account_digest = ?",
                               (profile["appId"], digest)).fetchone():
                self.db.execute("COMMIT")
                return "suppressed"
            if self.db.execute("""SELECT 1 FROM erased WHERE tenant_id = ? AND app_id = ? AND account_digest = ?
                                  AND erased_through >= ?""",
                               (profile["tenantId"], profile["appId"], digest, fetched)).fetchone():
                self.db.execute("COMMIT")
                return "erased"
            changed = self.db.execute(
                """INSERT INTO contacts (tenant_id, app_id, account_id, platform_user_id, display_name, email,
                       fetched_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (tenant_id, app_id, account_id) WHERE account_id IS NOT NULL DO UPDATE SET
                       platform_user_id = coalesce(excluded.platform_user_id, contacts.platform_user_id),
                       display_name = excluded.display_name, email = excluded.email,
                       fetched_at = excluded.fetched_at
                   WHERE contacts.fetched_at IS NULL OR excluded.fetched_at > contacts.fetched_at""",
                (profile["tenantId"], profile["appId"], profile["accountId"], profile.get("userId"),
                 profile.get("name"), profile.get("email"), fetched)).rowcount
            self.db.execute("COMMIT")
            return "stored" if changed else "stale"
        except Exception:
            self.db.execute("ROLLBACK")
            raise

    def apply(self, command):
        """Applies the command once; returns its outcome (the recorded one when it was applied before)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute(
                "SELECT outcome FROM erasures WHERE erasure_id = ?", (command["erasureId"],)
            ).fetchone()
            if row:
                self.db.execute("COMMIT")
                return row[0], True
            closed = command.get("cause") == "atlassian-closed"
            digest = suppression_digest(command["accountId"])
            if closed:
                self.db.execute("INSERT INTO suppressed (app_id, account_digest) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                (command["appId"], digest))
            # Whether or not a contact is held: its profile may still be on its way.
            self.db.execute(
                """INSERT INTO erased (tenant_id, app_id, account_digest, erased_through) VALUES (?, ?, ?, ?)
                   ON CONFLICT DO UPDATE SET erased_through = max(erased_through, excluded.erased_through)""",
                (command["tenantId"], command["appId"], digest, epoch_millis(command["issuedAt"])))
            match = ("tenant_id = ? AND app_id = ? AND account_id = ?",
                     (command["tenantId"], command["appId"], command["accountId"]))
            policy = command["policy"]
            if policy == "delete":
                changed = self.db.execute(f"DELETE FROM contacts WHERE {match[0]}", match[1]).rowcount
                outcome = "erased"
            elif policy == "scrub":
                # A closed account's accountId goes too: the row stays with the platform user, unlinked.
                unlink = ", account_id = NULL" if closed else ""
                changed = self.db.execute(
                    f"UPDATE contacts SET display_name = NULL, email = NULL{unlink} WHERE {match[0]}",
                    match[1]).rowcount
                outcome = "scrubbed"
            else:  # disassociate: the row stays with the platform user, unlinked from the Atlassian account
                changed = self.db.execute(
                    f"UPDATE contacts SET account_id = NULL, display_name = NULL, email = NULL WHERE {match[0]}",
                    match[1]).rowcount
                outcome = "disassociated"
            if changed == 0:
                outcome = "nothing-held"
            self.db.execute(
                "INSERT INTO erasures (erasure_id, outcome, applied_at) VALUES (?, ?, ?)",
                (command["erasureId"], outcome, rfc3339_now()))
            self.db.execute("COMMIT")
            # The WAL still holds the page images from before the erasure; fold it into the file and empty it.
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return outcome, False
        except Exception:
            self.db.execute("ROLLBACK")
            raise


def field_problem(body, field, required):
    """Why `field` of `body` cannot be read as text — absent or null (when `required`), not a string, empty (when
    `required`), or not encodable — or None. The reason names the field, never its value."""
    value = body.get(field)
    if value is None:
        return f"missing field {field}" if required else None
    if not isinstance(value, str):
        return f"field {field} is not a string"
    if required and not value:
        return f"field {field} is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can spell a lone surrogate ("\ud800"); no SQLite text, digest or record key can hold one.
        return f"field {field} is not valid Unicode"
    return None


def epoch_millis(text):
    """An RFC 3339 date-time (any fraction, Z or an offset) as ms since the epoch, for newest-wins comparisons."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("date-time without an offset")
    return int(moment.timestamp() * 1000)


def cloud_event_headers(event_type, source):
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(uuid.uuid4()).encode()),
        ("ce_type", event_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", rfc3339_now().encode()),
        ("content-type", b"application/json"),
    ]


class Participant:
    def __init__(self, config, store):
        self.config = config
        self.store = store
        self.source = f"/participants/{config.name}"
        self.producer = Producer({
            "bootstrap.servers": config.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # The contract's partitioner (the Java client's, and Lethe's): an ack lands on the partition its
            # erasureId gives, whoever produces it. confluent-kafka's default (CRC32) would put it elsewhere.
            "partitioner": "murmur2_random",
        })
        self.consumer = Consumer({
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        })
        self.running = True

    def send(self, topic, key, body, event_type):
        """Produces one record and waits for the broker's acknowledgement."""
        failures = []
        self.producer.produce(
            topic, key=key.encode(), value=json.dumps(body, separators=(",", ":")).encode(),
            headers=cloud_event_headers(event_type, self.source),
            on_delivery=lambda err, _msg: failures.append(err) if err else None)
        remaining = self.producer.flush(30)
        if remaining or failures:
            raise KafkaException(failures[0] if failures else "delivery timed out")

    def declare(self):
        self.send(self.config.participants_topic, self.config.name, {
            "schemaVersion": "1.0",
            "participant": self.config.name,
            "holds": ["name", "email"],
            "declaredAt": rfc3339_now(),
        }, "lethe.ParticipantDeclared")
        log.info("declared as %s", self.config.name)

    def dead_letter(self, message, reason):
        headers = list(message.headers() or []) + [
            ("lethe_error", reason.encode()),
            ("lethe_source_topic", message.topic().encode()),
            ("lethe_source_partition", str(message.partition()).encode()),
            ("lethe_source_offset", str(message.offset()).encode()),
        ]
        self.producer.produce(message.topic() + ".dlq", key=message.key(), value=message.value(), headers=headers)
        if self.producer.flush(30):
            raise KafkaException("dead letter not acknowledged")

    @staticmethod
    def parse(message, event_type, required, optional=()):
        """The event body in `message` — with the CloudEvents headers of `event_type`, a schemaVersion of the major
        this code knows, every `required` field a non-empty string and every `optional` one a string, null or
        absent — or a reason it cannot be processed (never including the payload). The handlers read no other field,
        so nothing past this point meets a value of a type it does not expect."""
        headers = {name: (value or b"").decode("utf-8", "replace") for name, value in (message.headers() or [])}
        for name in ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time"):
            if not headers.get(name):
                return None, f"missing CloudEvents header {name}"
        if headers["ce_specversion"] != "1.0":
            return None, "only CloudEvents 1.0 is supported"
        if headers["ce_type"] != event_type:
            return None, f"unexpected ce_type (expected {event_type})"
        try:
            body = json.loads(message.value() or b"")
        except RecursionError:
            # Valid JSON nested deeper than the parser's stack (`"name": [[[...]]]`): not a ValueError, and uncaught
            # it would end the process, which would read the same record again on restart, for ever.
            return None, "JSON nested too deeply"
        except ValueError:
            return None, "malformed JSON"
        if not isinstance(body, dict):
            return None, "body is not an object"
        version = body.get("schemaVersion")
        if version is None:
            return None, "missing schemaVersion"
        if not isinstance(version, str):
            return None, "schemaVersion is not a string"
        match = SCHEMA_VERSION.fullmatch(version)
        if not match:
            return None, "schemaVersion is not of the form major.minor"
        if int(match[1]) != SCHEMA_MAJOR:
            return None, f"unsupported schema version {version}"  # digits and a dot only: no payload in the reason
        for field in required:
            reason = field_problem(body, field, required=True)
            if reason:
                return None, reason
        for field in optional:
            reason = field_problem(body, field, required=False)
            if reason:
                return None, reason
        return body, None

    def handle_profile(self, message):
        profile, reason = self.parse(message, "lethe.ProfileFetched", ("tenantId", "appId", "accountId", "fetchedAt"),
                                     ("userId", "name", "email", "nickname", "picture"))
        if profile is not None:
            try:
                epoch_millis(profile["fetchedAt"])
            except ValueError:
                profile, reason = None, "malformed fetchedAt"
        if profile is None:
            log.warning("dead-lettering a profile: %s", reason)
            self.dead_letter(message, reason)
            return
        # Ids only in the log: the profile itself is personal data.
        # The accountId is personal data: the log names the app and tenant only.
        log.info("profile of app %s for tenant %s: %s", profile["appId"], profile["tenantId"], self.store.sync(profile))

    def handle_command(self, message):
        command, reason = self.parse(message, "lethe.EraseSubject",
                                     ("erasureId", "tenantId", "appId", "accountId", "policy", "issuedAt"),
                                     ("cause", "deadline"))
        if command is not None and command["policy"] not in POLICIES:
            command, reason = None, "unknown policy"
        if command is not None:
            try:
                epoch_millis(command["issuedAt"])
            except ValueError:
                command, reason = None, "malformed issuedAt"
        if command is None:
            log.warning("dead-lettering a command: %s", reason)
            self.dead_letter(message, reason)
            return
        outcome, repeated = self.store.apply(command)
        self.send(self.config.acks_topic, command["erasureId"], {
            "schemaVersion": "1.0",
            "erasureId": command["erasureId"],
            "participant": self.config.name,
            "outcome": outcome,
            "at": rfc3339_now(),
        }, "lethe.ErasureAcknowledged")
        log.info("erasure %s: %s%s", command["erasureId"], outcome, " (re-acknowledged)" if repeated else "")

    def run(self):
        self.declare()
        self.consumer.subscribe([self.config.commands_topic, self.config.profiles_topic])
        print(f"python-participant {self.config.name} ready", flush=True)
        try:
            while self.running:
                message = self.consumer.poll(0.2)
                if message is None:
                    continue
                if message.error():
                    log.warning("consumer error: %s", message.error())
                    continue
                try:
                    if message.topic() == self.config.profiles_topic:
                        self.handle_profile(message)
                    else:
                        self.handle_command(message)
                except (sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
                        TypeError, ValueError, KeyError) as error:
                    # A record this code cannot apply, whatever its validation missed: retrying it could only loop
                    # (busy or broker errors are not caught here: they end the process, which restarts uncommitted).
                    # Python 3.11 reports a value SQLite cannot bind as ProgrammingError, earlier ones InterfaceError.
                    log.error("record to the DLQ: %s", type(error).__name__)
                    self.dead_letter(message, f"unprocessable: {type(error).__name__}")
                # Only now: the change is committed in SQLite and the ack (or dead letter) is on the broker.
                self.consumer.commit(message=message, asynchronous=False)
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def stop(self, *_):
        self.running = False


def main():
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config(os.environ)
    participant = Participant(config, Store(config.db_path))
    signal.signal(signal.SIGTERM, participant.stop)
    signal.signal(signal.SIGINT, participant.stop)
    participant.run()


if __name__ == "__main__":
    sys.exit(main())
