import Foundation

/// The Kafka topics Lethe publishes and consumes, each declared once, here: name, key, the events it carries (and
/// whether a tombstone is one of them), cleanup policy and retention, a fixed partition count where it has one, and
/// whether it has a DLQ. Services name a topic by its declaration (`\.profiles`, `topics.profiles` in a namespace,
/// ``LetheTopics``); nothing else holds a topic name or a retention.
///
/// Names carry a `.v1` suffix: a breaking change to a topic's key or value contract gets a new topic, not a new
/// meaning for an old one. Partition counts are deployment configuration (`KAFKA_TOPIC_PARTITIONS`), but
/// ``coPartitioned`` lists the topics that must share whatever count is configured.
///
/// Adding a topic: one `static let` here and its entry in ``all`` (TopicsTests checks both hold the same topics);
/// then compose's `topics` job and docs/asyncapi.yaml, which scripts/validate-compose and scripts/validate-contracts
/// hold against ``all``.
package enum Topics {
    /// `TenantConfigured`, keyed by tenantId. Compacted: the latest configuration per tenant is the state.
    package static let tenants = TopicDefinition(
        name: "lethe.tenants.v1", key: .tenantId, events: [TenantConfigured.self], tombstones: false,
        compacted: true, retentionMs: nil)
    /// `ProfileFetched`, keyed by `appId:accountId`. Holds personal data, hence the short (7 day) retention.
    package static let profiles = TopicDefinition(
        name: "lethe.profiles.v1", key: .account, events: [ProfileFetched.self], tombstones: false,
        compacted: false, retentionMs: TopicDefinition.sevenDaysMs)
    /// `AccountHeld`, keyed by `appId:accountId`; a tombstone (null value) means no tenant holds the account any
    /// more. Compacted, and co-partitioned with ``pdrReports``. Its keys are accountIds: what a tombstone replaced is
    /// compacted away within ``TopicDefinition/sevenDaysMs`` (`max.compaction.lag.ms`), as on every compacted topic
    /// that names an account.
    package static let pdrAccounts = TopicDefinition(
        name: "lethe.pdr.accounts.v1", key: .account, events: [AccountHeld.self], tombstones: true,
        compacted: true, retentionMs: nil, maxCompactionLagMs: TopicDefinition.sevenDaysMs)
    /// `AccountReported`, keyed by `appId:accountId`: the reporter's changelog, restored on partition assignment; a
    /// tombstone follows the record of an account Atlassian answered `closed`. Compacted (`max.compaction.lag.ms` 7
    /// days, as ``pdrAccounts``), and co-partitioned with ``pdrAccounts``.
    package static let pdrReports = TopicDefinition(
        name: "lethe.pdr.reports.v1", key: .account, events: [AccountReported.self], tombstones: true,
        compacted: true, retentionMs: nil, maxCompactionLagMs: TopicDefinition.sevenDaysMs)
    /// `AccountStatusReported`, keyed by `appId:accountId`: Atlassian's `closed`/`updated` answers.
    package static let pdrStatus = TopicDefinition(
        name: "lethe.pdr.status.v1", key: .account, events: [AccountStatusReported.self], tombstones: false,
        compacted: false, retentionMs: TopicDefinition.thirtyDaysMs)
    /// `ErasureRequested`, keyed by `appId:accountId`: input to the erasure executor.
    package static let erasureRequests = TopicDefinition(
        name: "lethe.erasure.requests.v1", key: .account, events: [ErasureRequested.self], tombstones: false,
        compacted: false, retentionMs: TopicDefinition.thirtyDaysMs)
    /// `EraseSubject`, keyed by `appId:accountId`: the command every participant applies. Ids only, no PII.
    package static let erasureCommands = TopicDefinition(
        name: "lethe.erasure.commands.v1", key: .account, events: [EraseSubject.self], tombstones: false,
        compacted: false, retentionMs: TopicDefinition.thirtyDaysMs)
    /// `ErasureAcknowledged`, keyed by erasureId: one per participant per erasure.
    package static let erasureAcks = TopicDefinition(
        name: "lethe.erasure.acks.v1", key: .erasureId, events: [ErasureAcknowledged.self], tombstones: false,
        compacted: false, retentionMs: TopicDefinition.thirtyDaysMs)
    /// `ParticipantDeclared`, keyed by participant; a tombstone means the participant left; `ParticipantRetired`
    /// (same key), an operator retired it. Compacted.
    package static let erasureParticipants = TopicDefinition(
        name: "lethe.erasure.participants.v1", key: .participant, events: [ParticipantDeclared.self, ParticipantRetired.self],
        tombstones: true, compacted: true, retentionMs: nil)
    /// `ErasureCompleted`, keyed by erasureId: the public, PII-free proof of each erasure. Compacted.
    package static let erasureCompleted = TopicDefinition(
        name: "lethe.erasure.completed.v1", key: .erasureId, events: [ErasureCompleted.self], tombstones: false,
        compacted: true, retentionMs: nil)
    /// `ErasureState` (keyed by erasureId) and, written before issue 18 and still read, `ParticipantRetired` (keyed
    /// `retired:<participant>:<ms>`): erasure-executor's changelog, read back at every start. Compacted; an open
    /// erasure's records carry its accountId, which the record written at completion drops, and compaction removes
    /// the earlier ones within ``TopicDefinition/sevenDaysMs`` (`max.compaction.lag.ms`). No DLQ (its reader logs and
    /// counts what it cannot use).
    package static let erasureState = TopicDefinition(
        name: "lethe.erasure.state.v1", key: .erasureState, events: [ErasureState.self, ParticipantRetired.self],
        tombstones: false, compacted: true, retentionMs: nil, maxCompactionLagMs: TopicDefinition.sevenDaysMs,
        hasDLQ: false)
    /// `ProfilesHeld` (keyed `appId:accountId`, or `:unlinked:<id>`; a tombstone: nothing held under the key) and
    /// `ProfileErasureRecorded` (keyed `:erasure:<erasureId>`): profile-store's changelog, each record on the partition
    /// of its subject's profiles (co-partitioned with ``profiles`` and ``erasureCommands``), read back by the replica
    /// its group assigns that partition. Compacted; holds personal data, so a value replaced or tombstoned by an
    /// erasure is compacted away within ``TopicDefinition/sevenDaysMs`` (`max.compaction.lag.ms`), the profiles
    /// topic's own retention. No DLQ (its reader logs and counts what it cannot use).
    package static let profileState = TopicDefinition(
        name: "lethe.profiles.state.v1", key: .profileState, events: [ProfilesHeld.self, ProfileErasureRecorded.self],
        tombstones: true, compacted: true, retentionMs: nil, maxCompactionLagMs: TopicDefinition.sevenDaysMs,
        hasDLQ: false)
    /// `GatewayRowChanged`, keyed `<table>:<primary key>`; a tombstone: the row was deleted. oauth-gateway's changelog:
    /// its active replica publishes every row it changes, and a replica that becomes active reads the whole topic back
    /// first. Compacted; holds accountIds and sealed tokens, so a value an erasure replaced or tombstoned is compacted
    /// away within ``TopicDefinition/sevenDaysMs`` (`max.compaction.lag.ms`). No DLQ (its reader logs and counts what it
    /// cannot use).
    package static let gatewayState = TopicDefinition(
        name: "lethe.gateway.state.v1", key: .gatewayState, events: [GatewayRowChanged.self], tombstones: true,
        compacted: true, retentionMs: nil, maxCompactionLagMs: TopicDefinition.sevenDaysMs, hasDLQ: false)
    /// One partition, which the replicas of a service that must run one active replica at a time share as a consumer
    /// group (`<service>.replicas`); the member Kafka assigns it to is the active one (`ReplicaLease`). Its records,
    /// `ReplicaActivated` keyed by service, say where each service's active replica answers, so standbys forward
    /// requests there. Compacted: the latest per service is what counts. No DLQ (its reader logs what it cannot use).
    package static let replicas = TopicDefinition(
        name: "lethe.replicas.v1", key: .service, events: [ReplicaActivated.self], tombstones: false,
        compacted: true, retentionMs: nil, partitions: 1, hasDLQ: false)

    /// Every topic of the system, in the order of the declarations above.
    ///
    /// Services create topics from it (`ServiceContext.ensureTopics`), compose's `topics` job must match it
    /// (scripts/validate-compose), docs/asyncapi.yaml must describe each channel as it says (scripts/validate-contracts:
    /// messages, keys, policy, retention), and a debug build refuses to send an event to a topic that does not carry it.
    package static let all: [TopicDefinition] = [
        tenants, profiles, pdrAccounts, pdrReports, pdrStatus, erasureRequests, erasureCommands, erasureAcks,
        erasureParticipants, erasureCompleted, erasureState, profileState, gatewayState, replicas,
    ]

    /// Partitions per topic when configuration says nothing else.
    package static let defaultPartitionCount = 12

    /// Topics that are co-partitioned by key and therefore must be created with the same partition count:
    /// partition p of each must land on the same pdr-reporter instance. (profile-store's ``profiles``,
    /// ``erasureCommands`` and ``profileState`` are co-partitioned the same way; every topic gets the configured
    /// count, and a service refuses to start on a topic that has another.)
    package static let coPartitioned: [TopicDefinition] = [pdrAccounts, pdrReports]

    /// Header a consumer adds to a dead-lettered record, holding why it could not be processed.
    ///
    /// Its value is a `ContractError`-style description: it must never contain the payload (it may hold PII).
    package static let dlqErrorHeader = "lethe_error"

    /// The dead-letter topic of `topic`: `<topic>.dlq`, keyed as its source, holding the original bytes and headers.
    package static func dlq(for topic: String) -> String {
        "\(topic).dlq"
    }

    /// The definition of a DLQ for `topic` (a name of ``all``, namespaced or not): never compacted (several dead
    /// letters may share a key and all matter), kept 30 days — or as long as its source topic when that is shorter,
    /// so a dead letter of personal data (a malformed `ProfileFetched`) does not outlive the profiles topic's 7 days.
    package static func dlqDefinition(for topic: String) -> TopicDefinition {
        let source = definition(ofNamespaced: topic)
        let retention = min(TopicDefinition.thirtyDaysMs, source?.retentionMs ?? TopicDefinition.thirtyDaysMs)
        return TopicDefinition(
            name: dlq(for: topic), key: source?.key ?? .account, events: [], tombstones: false, compacted: false,
            retentionMs: retention)
    }

    /// The definition of `topic`, a name of ``all`` with or without a namespace (`<ns>.lethe.profiles.v1`).
    package static func definition(ofNamespaced topic: String) -> TopicDefinition? {
        all.first { topic == $0.name || topic.hasSuffix("." + $0.name) }
    }

    /// Whether `topic` (namespaced or not) may carry `event`: true for a topic Lethe does not declare (tests' own
    /// topics, a DLQ), else only for the events its declaration lists.
    package static func carries(_ topic: String, _ event: any LetheEvent.Type) -> Bool {
        guard !topic.hasSuffix(".dlq"), let definition = definition(ofNamespaced: topic) else { return true }
        return definition.eventTypes.contains(event.eventType)
    }

    /// The declaration a key path names (`\.profiles`), as services list the topics they use.
    package static func definition(of topic: KeyPath<Topics.Type, TopicDefinition>) -> TopicDefinition {
        Topics.self[keyPath: topic]
    }
}

/// What a topic's records are keyed by; the raw value names the key's schema in docs/asyncapi.yaml.
package enum TopicKey: String, Sendable, Hashable {
    /// `appId:accountId` (``AccountKey``): every record of one account lands on the same partition.
    case account = "AccountKey"
    case tenantId = "TenantIdKey"
    case erasureId = "ErasureIdKey"
    case participant = "ParticipantKey"
    /// erasureId, or `retired:<participant>:<ms>` for a retirement (the executor's changelog).
    case erasureState = "ErasureStateKey"
    /// A service's name (the lease topic).
    case service = "ServiceKey"
    /// `appId:accountId`, `:unlinked:<id>` or `:erasure:<erasureId>` (profile-store's changelog).
    case profileState = "ProfileStateKey"
    /// `<table>:<primary key>` (oauth-gateway's changelog).
    case gatewayState = "GatewayStateKey"
}

/// One topic, declared: name, key, the events it carries, cleanup policy and retention. The partition count is
/// configuration (see ``Topics/defaultPartitionCount``) except for a topic that fixes its own (``partitions``).
package struct TopicDefinition: Sendable, Hashable {
    /// 7 days in milliseconds: retention of topics carrying personal data, and of their DLQs.
    package static let sevenDaysMs: Int64 = 7 * 24 * 60 * 60 * 1000
    /// 30 days in milliseconds: retention of event (non-compacted) topics and DLQs.
    package static let thirtyDaysMs: Int64 = 30 * 24 * 60 * 60 * 1000

    /// The topic name, e.g. `lethe.pdr.accounts.v1`.
    package var name: String
    package var key: TopicKey
    /// `eventType` of each event its records carry (`lethe.AccountHeld`).
    package var eventTypes: [String]
    /// Whether a record with a null value (a tombstone: the key is gone) is part of the topic's contract.
    package var tombstones: Bool
    /// `cleanup.policy=compact`: only the latest value per key is kept, and a tombstone eventually removes the key.
    package var compacted: Bool
    /// `retention.ms` for a delete-policy topic; `nil` means no time-based deletion (compacted topics keep the
    /// latest value per key for ever).
    package var retentionMs: Int64?
    /// `max.compaction.lag.ms` of a compacted topic holding personal data: how long a replaced or tombstoned value
    /// may stay before compaction removes it (Kafka rolls the active segment for it too); nil for the broker's default.
    package var maxCompactionLagMs: Int64?
    /// The partition count whatever `KAFKA_TOPIC_PARTITIONS` says (the lease topic: 1); nil for the configured count.
    package var partitions: Int?
    /// Whether the topic has a DLQ: every topic whose records someone consumes (a topic without events has none),
    /// except a service's private changelog, whose reader logs and counts what it cannot use.
    package var deadLettered: Bool { hasDLQ && (!eventTypes.isEmpty || tombstones) }
    private var hasDLQ: Bool

    /// Makes a definition; see the properties for what each value means.
    package init(
        name: String, key: TopicKey, events: [any LetheEvent.Type], tombstones: Bool, compacted: Bool,
        retentionMs: Int64?, maxCompactionLagMs: Int64? = nil, partitions: Int? = nil, hasDLQ: Bool = true
    ) {
        self.name = name
        self.key = key
        self.eventTypes = events.map { $0.eventType }
        self.tombstones = tombstones
        self.compacted = compacted
        self.retentionMs = retentionMs
        self.maxCompactionLagMs = maxCompactionLagMs
        self.partitions = partitions
        self.hasDLQ = hasDLQ
    }

    /// The Kafka topic configuration entries this definition implies (`cleanup.policy`, `retention.ms`,
    /// `max.compaction.lag.ms`).
    ///
    /// A compacted topic gets `retention.ms=-1` so that a broker default of 7 days can never delete state.
    package var kafkaConfig: [String: String] {
        if compacted {
            var config = ["cleanup.policy": "compact", "retention.ms": "-1"]
            if let maxCompactionLagMs { config["max.compaction.lag.ms"] = String(maxCompactionLagMs) }
            return config
        }
        return ["cleanup.policy": "delete", "retention.ms": String(retentionMs ?? -1)]
    }
}

/// Every topic of ``Topics`` inside an optional namespace (`<namespace>.lethe.…`), so that tests and benchmarks
/// sharing one broker each get their own topics: `topics.profiles` is the name of ``Topics/profiles`` in this
/// namespace. One struct for every service, and no list of its own: a topic's property is its declaration's name.
@dynamicMemberLookup
package struct LetheTopics: Sendable, Equatable {
    /// The prefix (`LETHE_TOPIC_NAMESPACE`), nil for the architecture's names.
    package var namespace: String?

    package init(namespace: String?) {
        self.namespace = namespace
    }

    /// The name of `topic` in this namespace: `<namespace>.<name>`, or the declared name without a namespace.
    package subscript(dynamicMember topic: KeyPath<Topics.Type, TopicDefinition>) -> String {
        name(of: Topics.self[keyPath: topic])
    }

    /// The name of `topic` in this namespace.
    package func name(of topic: TopicDefinition) -> String {
        namespace.map { "\($0).\(topic.name)" } ?? topic.name
    }
}
