import Foundation

/// The Kafka topics Lethe publishes and consumes, exactly as named in `ARCHITECTURE.md`.
///
/// Names carry a `.v1` suffix: a breaking change to a topic's key or value contract gets a new topic, not a new
/// meaning for an old one. Partition counts are deliberately absent — they are deployment configuration — but
/// ``coPartitioned`` lists the topics that must share whatever count is configured.
package enum Topics {
    /// `TenantConfigured`, keyed by tenantId. Compacted: the latest configuration per tenant is the state.
    package static let tenants = "lethe.tenants.v1"
    /// `ProfileFetched`, keyed by `appId:accountId`. Holds personal data, hence the short (7 day) retention.
    package static let profiles = "lethe.profiles.v1"
    /// `AccountHeld`, keyed by `appId:accountId`; a tombstone (null value) means no tenant holds the account any
    /// more. Compacted, and co-partitioned with ``pdrReports``.
    package static let pdrAccounts = "lethe.pdr.accounts.v1"
    /// `AccountReported`, keyed by `appId:accountId`: the reporter's changelog, restored on partition assignment; a
    /// tombstone follows the record of an account Atlassian answered `closed`. Compacted, and co-partitioned with
    /// ``pdrAccounts``.
    package static let pdrReports = "lethe.pdr.reports.v1"
    /// `AccountStatusReported`, keyed by `appId:accountId`: Atlassian's `closed`/`updated` answers.
    package static let pdrStatus = "lethe.pdr.status.v1"
    /// `ErasureRequested`, keyed by `appId:accountId`: input to the erasure executor.
    package static let erasureRequests = "lethe.erasure.requests.v1"
    /// `EraseSubject`, keyed by `appId:accountId`: the command every participant applies. Ids only, no PII.
    package static let erasureCommands = "lethe.erasure.commands.v1"
    /// `ErasureAcknowledged`, keyed by erasureId: one per participant per erasure.
    package static let erasureAcks = "lethe.erasure.acks.v1"
    /// `ParticipantDeclared`, keyed by participant; a tombstone means the participant left. Compacted.
    package static let erasureParticipants = "lethe.erasure.participants.v1"
    /// `ErasureCompleted`, keyed by erasureId: the public, PII-free proof of each erasure. Compacted.
    package static let erasureCompleted = "lethe.erasure.completed.v1"
    /// `ErasureState` (keyed by erasureId) and `ParticipantRetired` (keyed `retired:<participant>:<ms>`):
    /// erasure-executor's changelog, read back at every start. Compacted.
    package static let erasureState = "lethe.erasure.state.v1"
    /// No records: one partition, which the replicas of a service that must run one active replica at a time share
    /// as a consumer group (`<service>.replicas`); the member Kafka assigns it to is the active one (`ReplicaLease`).
    package static let replicas = "lethe.replicas.v1"

    /// Partitions per topic when configuration says nothing else.
    package static let defaultPartitionCount = 12

    /// Topics that are co-partitioned by key and therefore must be created with the same partition count:
    /// partition p of each must land on the same pdr-reporter instance.
    package static let coPartitioned: [String] = [pdrAccounts, pdrReports]

    /// Header a consumer adds to a dead-lettered record, holding why it could not be processed.
    ///
    /// Its value is a `ContractError`-style description: it must never contain the payload (it may hold PII).
    package static let dlqErrorHeader = "lethe_error"

    /// The dead-letter topic of `topic`: `<topic>.dlq`, keyed as its source, holding the original bytes and headers.
    package static func dlq(for topic: String) -> String {
        "\(topic).dlq"
    }

    /// Every topic of the system, declared once: its key, the events its records carry (and whether a null value, a
    /// tombstone, is one of them), its cleanup policy and retention. Each has a DLQ, ``dlqDefinition(for:)``.
    ///
    /// Services create topics from it (`ServiceContext.ensureTopics`), compose's `topics` job must match it
    /// (scripts/validate-compose), docs/asyncapi.yaml must describe each channel as it says (scripts/validate-contracts:
    /// messages, keys, policy, retention), and a debug build refuses to send an event to a topic that does not carry it.
    package static let all: [TopicDefinition] = [
        TopicDefinition(
            name: tenants, key: .tenantId, events: [TenantConfigured.self], tombstones: false,
            compacted: true, retentionMs: nil),
        TopicDefinition(
            name: profiles, key: .account, events: [ProfileFetched.self], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.sevenDaysMs),
        TopicDefinition(
            name: pdrAccounts, key: .account, events: [AccountHeld.self], tombstones: true,
            compacted: true, retentionMs: nil),
        TopicDefinition(
            name: pdrReports, key: .account, events: [AccountReported.self], tombstones: true,
            compacted: true, retentionMs: nil),
        TopicDefinition(
            name: pdrStatus, key: .account, events: [AccountStatusReported.self], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.thirtyDaysMs),
        TopicDefinition(
            name: erasureRequests, key: .account, events: [ErasureRequested.self], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.thirtyDaysMs),
        TopicDefinition(
            name: erasureCommands, key: .account, events: [EraseSubject.self], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.thirtyDaysMs),
        TopicDefinition(
            name: erasureAcks, key: .erasureId, events: [ErasureAcknowledged.self], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.thirtyDaysMs),
        TopicDefinition(
            name: erasureParticipants, key: .participant, events: [ParticipantDeclared.self], tombstones: true,
            compacted: true, retentionMs: nil),
        TopicDefinition(
            name: erasureCompleted, key: .erasureId, events: [ErasureCompleted.self], tombstones: false,
            compacted: true, retentionMs: nil),
        TopicDefinition(
            name: erasureState, key: .erasureState, events: [ErasureState.self, ParticipantRetired.self],
            tombstones: false, compacted: true, retentionMs: nil, hasDLQ: false),
        TopicDefinition(
            name: replicas, key: .service, events: [], tombstones: false,
            compacted: false, retentionMs: TopicDefinition.thirtyDaysMs, partitions: 1),
    ]

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

    /// The definition of the topic called `name` in ``all``, or `nil` for a name Lethe does not own.
    package static func definition(named name: String) -> TopicDefinition? {
        all.first { $0.name == name }
    }

    /// The definition of a topic of ``LetheTopics`` (every one is in ``all``; TopicsTests checks it).
    package static func definition(of topic: KeyPath<LetheTopics, String>) -> TopicDefinition {
        let name = LetheTopics(namespace: nil)[keyPath: topic]
        guard let definition = definition(named: name) else { preconditionFailure("\(name) is not in Topics.all") }
        return definition
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
    /// A service's name (the lease topic, which carries no records).
    case service = "ServiceKey"
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
    /// The partition count whatever `KAFKA_TOPIC_PARTITIONS` says (the lease topic: 1); nil for the configured count.
    package var partitions: Int?
    /// Whether the topic has a DLQ: every topic whose records someone consumes (a topic without events has none),
    /// except a service's private changelog, whose reader logs and counts what it cannot use.
    package var deadLettered: Bool { hasDLQ && (!eventTypes.isEmpty || tombstones) }
    private var hasDLQ: Bool

    /// Makes a definition; see the properties for what each value means.
    package init(
        name: String, key: TopicKey, events: [any LetheEvent.Type], tombstones: Bool, compacted: Bool,
        retentionMs: Int64?, partitions: Int? = nil, hasDLQ: Bool = true
    ) {
        self.name = name
        self.key = key
        self.eventTypes = events.map { $0.eventType }
        self.tombstones = tombstones
        self.compacted = compacted
        self.retentionMs = retentionMs
        self.partitions = partitions
        self.hasDLQ = hasDLQ
    }

    /// The Kafka topic configuration entries this definition implies (`cleanup.policy`, `retention.ms`).
    ///
    /// A compacted topic gets `retention.ms=-1` so that a broker default of 7 days can never delete state.
    package var kafkaConfig: [String: String] {
        if compacted {
            return ["cleanup.policy": "compact", "retention.ms": "-1"]
        }
        return ["cleanup.policy": "delete", "retention.ms": String(retentionMs ?? -1)]
    }
}

/// Every topic of ``Topics`` inside an optional namespace (`<namespace>.lethe.…`), so that tests and benchmarks
/// sharing one broker each get their own topics. One struct for every service: a topic has one property name
/// everywhere, the constant's name in ``Topics``.
package struct LetheTopics: Sendable, Equatable {
    package var tenants: String
    package var profiles: String
    package var pdrAccounts: String
    package var pdrReports: String
    package var pdrStatus: String
    package var erasureRequests: String
    package var erasureCommands: String
    package var erasureAcks: String
    package var erasureParticipants: String
    package var erasureCompleted: String
    package var erasureState: String
    package var replicas: String

    /// The architecture's names, each prefixed with `namespace.` when one is given (`LETHE_TOPIC_NAMESPACE`).
    package init(namespace: String?) {
        func name(_ topic: String) -> String { namespace.map { "\($0).\(topic)" } ?? topic }
        tenants = name(Topics.tenants)
        profiles = name(Topics.profiles)
        pdrAccounts = name(Topics.pdrAccounts)
        pdrReports = name(Topics.pdrReports)
        pdrStatus = name(Topics.pdrStatus)
        erasureRequests = name(Topics.erasureRequests)
        erasureCommands = name(Topics.erasureCommands)
        erasureAcks = name(Topics.erasureAcks)
        erasureParticipants = name(Topics.erasureParticipants)
        erasureCompleted = name(Topics.erasureCompleted)
        erasureState = name(Topics.erasureState)
        replicas = name(Topics.replicas)
    }
}
