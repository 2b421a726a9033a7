import Contracts
import ServiceKit

/// Every setting of profile-store, read and validated at start. See README "Configuration".
struct ProfileStoreConfig: Sendable {
    /// HTTP_HOST / HTTP_PORT (default 8081), KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPIC_PARTITIONS, KAFKA_CREATE_TOPICS,
    /// LETHE_DATA_DIR, LETHE_TOPIC_NAMESPACE (its `topics` and consumer `group(_:)` names).
    var standard: StandardServiceConfig
    /// `PROFILE_STORE_INGEST_BATCH`: most profile events per SQLite transaction (default 5000). Under a backlog
    /// every transaction is full, and its commit (WAL write, sync, checkpoint share) is paid per batch: at 2000 the
    /// commit cost the writer about three times as much per profile as at 5000. A trickle still commits at once
    /// (a batch is whatever arrived). Memory grows with it: about twice a batch of records waits decoded.
    var ingestBatch: Int
    /// Where tenant tokens are verified: `LETHE_GATEWAY_URL`, `LETHE_JWKS_URL`, `LETHE_TOKEN_ISSUER`.
    var tenantAuth: TenantAuthConfig
    /// `PROFILE_STORE_SINGLE_ACTIVE` (default false): run one active replica at a time behind the lease, the others
    /// standbys on the same file, as before its replicas owned partitions — for a deployment that keeps one shared
    /// volume. Otherwise every replica owns the partitions its group assigns it, on a file of its own.
    var singleActive: Bool

    init(reader: ConfigReader) throws {
        standard = try StandardServiceConfig(reader: reader, defaultPort: 8081)
        ingestBatch = try reader.int("PROFILE_STORE_INGEST_BATCH", default: 5000, range: 1...100_000)
        tenantAuth = try TenantAuthConfig(reader: reader)
        singleActive = try reader.bool("PROFILE_STORE_SINGLE_ACTIVE", default: false)
    }
}
