"""Reads the event contract from the Swift sources (the source of truth), for scripts/validate-contracts and
scripts/validate-compose. Deliberately simple parsing of `Shared/Contracts`: string literals and `package var` lines.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "Shared" / "Contracts"


def declarations():
    """Every topic of `Topics.all`, in its order, as a dict: name, key (the AsyncAPI key schema, e.g.
    `AccountKey`), events (event type names without `lethe.`), tombstones, compacted, retention_ms (or None),
    max_compaction_lag_ms (or None; `maxCompactionLagMs:`), partitions (a fixed count, or None for the configured
    one), dead_lettered (whether it has a `.dlq`: a topic with records, unless declared `hasDLQ: false`). The optional
    arguments are read in the order of `TopicDefinition.init`: maxCompactionLagMs, partitions, hasDLQ.

    Fails loudly when a declared topic (`package static let x = TopicDefinition(...)`) is not in `all`, or `all` names
    one that is not declared: a topic left out of `all` would never be created.
    """
    source = (CONTRACTS / "Topics.swift").read_text()
    key_schemas = dict(re.findall(r'case (\w+) = "(\w+Key)"', source))
    declared = {}
    for constant, name, key, events, tombstones, compacted, retention, lag, partitions, has_dlq in re.findall(
        r'package static let (\w+) = TopicDefinition\(\s*name: "(lethe\.[^"]+)", key: \.(\w+), events: \[([^\]]*)\],'
        r"\s*tombstones: (true|false),\s*compacted: (true|false), retentionMs: ([^),]+)"
        r"(?:,\s*maxCompactionLagMs: ([^),]+))?(?:,\s*partitions: (\d+))?(?:,\s*hasDLQ: (true|false))?\)",
        source
    ):
        if key not in key_schemas:
            raise SystemExit(f"swift_contracts: unknown TopicKey .{key} in Topics.swift")
        retention_ms = _milliseconds(retention, "retentionMs")
        event_names = [event.strip().removesuffix(".self") for event in events.split(",") if event.strip()]
        declared[constant] = {
            "name": name, "key": key_schemas[key], "events": event_names,
            "tombstones": tombstones == "true", "compacted": compacted == "true", "retention_ms": retention_ms,
            "max_compaction_lag_ms": _milliseconds(lag, "maxCompactionLagMs") if lag else None,
            "partitions": int(partitions) if partitions else None,
            "dead_lettered": has_dlq != "false" and bool(event_names or tombstones == "true"),
        }
    if not declared:
        raise SystemExit("swift_contracts: no topic declarations found in Topics.swift")
    listed = re.search(r"package static let all: \[TopicDefinition\] = \[([^\]]*)\]", source)
    if not listed:
        raise SystemExit("swift_contracts: no Topics.all in Topics.swift")
    order = [constant.strip() for constant in listed.group(1).split(",") if constant.strip()]
    unknown = [constant for constant in order if constant not in declared]
    if unknown:
        raise SystemExit(f"swift_contracts: Topics.all names undeclared topics: {', '.join(unknown)}")
    missing = sorted(set(declared) - set(order))
    if missing:
        raise SystemExit(f"swift_contracts: declared topics not in Topics.all: {', '.join(missing)}")
    return [declared[constant] for constant in order]


def _milliseconds(value, argument):
    """A duration argument of a declaration: `nil`, a `TopicDefinition` constant, or digits."""
    value = value.strip()
    if value == "nil":
        return None
    if value == "TopicDefinition.sevenDaysMs":
        return 7 * 24 * 60 * 60 * 1000
    if value == "TopicDefinition.thirtyDaysMs":
        return 30 * 24 * 60 * 60 * 1000
    if value.isdigit():
        return int(value)
    raise SystemExit(f"swift_contracts: cannot read {argument} {value!r} in Topics.swift")


def topics():
    """Every topic of `Topics.all`, as (name, compacted, retention_ms or None), in declaration order."""
    return [(d["name"], d["compacted"], d["retention_ms"]) for d in declarations()]


def topic_names():
    """Every `lethe.*` string literal in Topics.swift (what the brief calls "every topic in Topics.swift")."""
    source = (CONTRACTS / "Topics.swift").read_text()
    return sorted(set(re.findall(r'"(lethe\.[a-z0-9.]+)"', source)))


def kafka_config(compacted, retention_ms):
    """What `TopicDefinition.kafkaConfig` produces: (cleanup.policy, retention.ms)."""
    if compacted:
        return "compact", -1
    return "delete", -1 if retention_ms is None else retention_ms


def topic_config(declaration):
    """Every entry `TopicDefinition.kafkaConfig` produces for a declaration of `declarations()`, as
    {config name: value}: `cleanup.policy` and `retention.ms` (an int) always, and `max.compaction.lag.ms` (an int)
    for a compacted topic that declares `maxCompactionLagMs` (`kafkaConfig` sets it on no other)."""
    policy, retention = kafka_config(declaration["compacted"], declaration["retention_ms"])
    config = {"cleanup.policy": policy, "retention.ms": retention}
    if declaration["compacted"] and declaration["max_compaction_lag_ms"] is not None:
        config["max.compaction.lag.ms"] = declaration["max_compaction_lag_ms"]
    return config


DLQ_RETENTION_MS = 30 * 24 * 60 * 60 * 1000


def dlq_retention_ms(source_retention_ms):
    """What `Topics.dlqDefinition(for:)` gives a DLQ: 30 days, or its source topic's retention when shorter."""
    if source_retention_ms is None:
        return DLQ_RETENTION_MS
    return min(DLQ_RETENTION_MS, source_retention_ms)


def events():
    """Every `LetheEvent` in Shared/Contracts/Events: {EventName: {"type": "lethe.X", "fields": {name: optional}}}.

    Fields are the struct's top-level `package var` stored properties (4-space indent); `?` marks an optional.
    """
    result = {}
    for path in sorted((CONTRACTS / "Events").glob("*.swift")):
        source = path.read_text()
        for match in re.finditer(r"^package struct (\w+): LetheEvent\b[^{]*\{\n(.*?)^\}", source, re.M | re.S):
            name, body = match.group(1), match.group(2)
            event_type = re.search(r'static let eventType = "([^"]+)"', body)
            if not event_type:
                raise SystemExit(f"swift_contracts: {name} has no eventType")
            fields = {
                field: type_.strip().endswith("?")
                for field, type_ in re.findall(r"^    package var (\w+): ([^\n={]+)$", body, re.M)
            }
            result[name] = {"type": event_type.group(1), "fields": fields, "file": path.name}
    if not result:
        raise SystemExit("swift_contracts: no LetheEvent structs found")
    return result


def enums():
    """Every `package enum X: String` in Shared/Contracts/Events: {X: [raw values in declaration order]}."""
    result = {}
    for path in sorted((CONTRACTS / "Events").glob("*.swift")):
        source = path.read_text()
        for match in re.finditer(r"^package enum (\w+): String\b[^{]*\{\n(.*?)^\}", source, re.M | re.S):
            values = []
            for case, raw in re.findall(r'^    case (\w+)(?: = "([^"]*)")?$', match.group(2), re.M):
                values.append(raw or case)
            result[match.group(1)] = values
    return result
