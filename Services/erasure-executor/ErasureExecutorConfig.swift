import Contracts
import Crypto
import Foundation
import ServiceKit

/// Every setting of erasure-executor, read and validated at start. See README "Configuration".
struct ErasureExecutorConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8083), KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PARTITIONS, KAFKA_CREATE_TOPICS,
    /// LETHE_DATA_DIR, LETHE_TOPIC_NAMESPACE (its `topics` and consumer `group(_:)` names).
    var standard: StandardServiceConfig
    /// `LETHE_AUDIT_KEY` (secret, ≥ 32 characters): the HMAC key of audit subjects, and the seed the audit signing
    /// key is derived from. One secret, so an operator cannot rotate one and forget the other; rotating it starts a
    /// new `keyId` (old entries keep verifying only with the old public key, which the export names by `keyId`).
    var auditKey: String
    /// `LETHE_ADMIN_TOKEN` (secret, ≥ 16 characters): the operator's bearer token for audit and any erasure.
    var adminToken: String
    /// `ERASURE_RESEND_SECONDS` (default 300): wait before the first re-send to participants that have not acked;
    /// doubles with each re-send, up to 64×.
    var resendSeconds: Int
    /// `ERASURE_MAX_FAILED_ATTEMPTS` (default 5): `failed` acks from one participant before the erasure needs
    /// attention (and is no longer re-sent until `POST /v1/erasures/{id}/retry`).
    var maxFailedAttempts: Int
    /// `ERASURE_SWEEP_MILLISECONDS` (default 1000): how often re-sends and deadlines are checked.
    var sweepMilliseconds: Int
    /// `ERASURE_DAY_SECONDS` (default 86400): the length of one deadline day. Only tests shorten it, to see an
    /// erasure become overdue without waiting days.
    var daySeconds: Int
    /// `ERASURE_STATE_RESTORE_SECONDS` (default 15): how often, while the tenants and participants topics are not yet
    /// read to their end since the start, the executor logs an error saying so. It never stops waiting: nothing is
    /// dispatched before every declared participant is known (and `/health/ready` stays red meanwhile).
    var restoreAlertSeconds: Int
    /// Where tenant tokens are verified: `LETHE_GATEWAY_URL`, `LETHE_JWKS_URL`, `LETHE_TOKEN_ISSUER`.
    var tenantAuth: TenantAuthConfig
    /// `ERASURE_SINGLE_ACTIVE` (default false): run one active replica at a time behind the lease, the others
    /// standbys that forward to it, as before issue 18 — for a deployment that keeps its replicas on one shared
    /// volume. By default each replica owns the partitions its group assigns it, on a data directory of its own.
    var singleActive: Bool
    /// `ERASURE_OUTBOX_LINGER_MS` (default 20): how long the outbox waits after a change before it sends, so that the
    /// changes of several batches go out in one produce round. Every acknowledgement waits for it (a consumed record's
    /// commit, an API answer), so raising it slows those. Tests raise it to hold records back.
    var outboxLinger: Duration

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8083)
        auditKey = try reader.secret("LETHE_AUDIT_KEY", minimumLength: 32)
        adminToken = try reader.secret("LETHE_ADMIN_TOKEN", minimumLength: 16)
        resendSeconds = try reader.int("ERASURE_RESEND_SECONDS", default: 300, range: 1...86_400)
        maxFailedAttempts = try reader.int("ERASURE_MAX_FAILED_ATTEMPTS", default: 5, range: 1...1000)
        sweepMilliseconds = try reader.int("ERASURE_SWEEP_MILLISECONDS", default: 1000, range: 10...60_000)
        daySeconds = try reader.int("ERASURE_DAY_SECONDS", default: 86_400, range: 1...86_400)
        restoreAlertSeconds = try reader.int("ERASURE_STATE_RESTORE_SECONDS", default: 15, range: 0...600)
        tenantAuth = try TenantAuthConfig(reader: reader)
        singleActive = try reader.bool("ERASURE_SINGLE_ACTIVE", default: false)
        outboxLinger = .milliseconds(try reader.int("ERASURE_OUTBOX_LINGER_MS", default: 20, range: 0...60_000))
    }

    /// The ledger's settings derived from this configuration.
    var ledgerSettings: LedgerSettings {
        LedgerSettings(
            resendAfter: TimeInterval(resendSeconds), maxFailedAttempts: maxFailedAttempts,
            daySeconds: TimeInterval(daySeconds), commandsTopic: standard.topics.erasureCommands,
            completedTopic: standard.topics.erasureCompleted, stateTopic: standard.topics.erasureState,
            participantsTopic: standard.topics.erasureParticipants,
            partitions: standard.kafka.topicPartitions)
    }
}
