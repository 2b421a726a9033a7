import Contracts
import ErasureKit
import Foundation
import Logging
import Messaging
import Metrics
import ServiceKit
import ServiceLifecycle
import Storage

extension LetheTopics {
    /// `ce_source` of what the gateway publishes.
    static let gatewaySource = "lethe/oauth-gateway"
}

/// Consumes `lethe.pdr.status.v1` through the shared ``ConsumerPipeline`` and acts on `updated` (architecture flow
/// 4): the profile is fetched again and republished, or, when the grant is gone, erased (the vault publishes
/// `ErasureRequested`). `closed` is the executor's business. One record at a time (each may call Atlassian), committed
/// after its effect is durable. Atlassian or SQLite trouble that passes is retried, for as long as it lasts; a record
/// that cannot be decoded, or fails for good, goes to the DLQ.
final class StatusConsumer: Service, Sendable {
    private let pipeline: ConsumerPipeline<AccountStatusReported>
    private let gateway: Gateway
    private let durability: Durability
    private let updated = Counter(label: "lethe_gateway_updated_handled_total")

    /// Transient for a status: what the executor's and profile-store's work call transient, and Atlassian answering
    /// 429, 5xx or not at all (the vault's `unavailable`).
    static let retry = RetryPolicy.storage.retrying { error in
        if case .unavailable = error as? VaultError { return true }
        return false
    }

    init(consumer: KafkaConsumer, gateway: Gateway, durability: Durability, producer: KafkaProducer, logger: Logger) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "profile refresh", retry: Self.retry,
            maxBatch: 1
        ) { message in
            let status = try message.decodeEvent(AccountStatusReported.self)
            _ = try AccountKey(appId: status.appId, accountId: status.accountId)
            return status.status == .updated ? status : nil
        }
        self.gateway = gateway
        self.durability = durability
    }

    func run() async throws {
        try await pipeline.run { batch in
            for record in batch {
                try await self.gateway.refreshProfiles(record.item)
                self.updated.increment()
            }
            // The refreshed profile and its security event on the broker before the offset is committed.
            try await self.durability.wait()
            return []
        }
    }
}

/// The gateway as an erasure participant: its connections (tokens, the accountId link) under the tenant's policy.
/// Acked only once the erasure is in the changelog (``Durability``): else a replica killed just after its ack would
/// leave the standby that takes over holding what the executor counts as erased.
struct GatewayErasureHandler: ErasureHandler {
    let database: GatewayDatabase
    /// Freed pages are zeroed (secure_delete); this empties the WAL soon after, so its old page images go too.
    let checkpointer: WALCheckpointer
    let durability: Durability

    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        guard let outcome = try await database.recordedErasure(erasureId) else { return nil }
        // Recorded by a process killed before its changelog went out, perhaps: it goes out before the re-ack.
        try await durability.wait()
        return ErasureResult(outcome: outcome)
    }

    /// One command as a batch of one: a failure comes back `failed`, as the participant makes of a thrown error.
    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        try await applyBatch([command])[0]
    }

    /// Each command through `erase` (which answers a recorded erasure with its record; one that throws is `failed`),
    /// then one wait for all of them instead of one each.
    func applyBatch(_ commands: [EraseSubject]) async throws -> [ErasureResult] {
        var results: [ErasureResult] = []
        results.reserveCapacity(commands.count)
        for command in commands {
            do {
                let outcome = try await database.erase(command)
                results.append(ErasureResult(outcome: outcome))
            } catch {
                results.append(.failed(by: error))
            }
        }
        checkpointer.request()
        try await durability.wait()
        return results
    }
}
