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

/// Consumes `lethe.pdr.status.v1` and acts on `updated` (ARCHITECTURE.md flow 4): the profile is fetched again and
/// republished, or, when the grant is gone, erased (the vault publishes `ErasureRequested`). `closed` is the
/// executor's business. A record is committed only after its effect is durable; Atlassian or SQLite trouble is
/// retried; an undecodable record goes to the DLQ.
final class StatusConsumer: Service, Sendable {
    private let consumer: KafkaConsumer
    private let gateway: Gateway
    private let deadLetters: DeadLetterQueue
    private let logger: Logger
    private let updated = Counter(label: "lethe_gateway_updated_handled_total")
    private let deadLettered = Counter(label: "lethe_gateway_dead_lettered_total")

    init(consumer: KafkaConsumer, gateway: Gateway, producer: KafkaProducer, logger: Logger) {
        self.consumer = consumer
        self.gateway = gateway
        self.deadLetters = DeadLetterQueue(producer: producer)
        self.logger = logger
    }

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumer.run() }
            for try await message in consumer.messages.cancelOnGracefulShutdown() {
                try await handle(message)
                do {
                    try await consumer.commit(message)
                } catch {
                    logger.warning("offset commit failed; the record may be redelivered", metadata: ["error": "\(error)"])
                }
            }
            group.cancelAll()
        }
    }

    private func handle(_ message: KafkaMessage) async throws {
        let status: AccountStatusReported
        do {
            status = try message.decodeEvent(AccountStatusReported.self)
            _ = try AccountKey(appId: status.appId, accountId: status.accountId)
        } catch {
            logger.warning("unusable status record to the DLQ", metadata: [
                "partition": "\(message.partition)", "offset": "\(message.offset)", "error": "\(error)",
            ])
            try await retryUntilDone("dead-lettering", logger: logger) {
                try await self.deadLetters.route(message, reason: "\(error)")
            }
            deadLettered.increment()
            return
        }
        guard status.status == .updated else { return }
        let gateway = self.gateway
        try await retryUntilDone("profile refresh", logger: logger) { try await gateway.refreshProfiles(status) }
        updated.increment()
    }
}

/// The gateway as an erasure participant: its connections (tokens, the accountId link) under the tenant's policy.
struct GatewayErasureHandler: ErasureHandler {
    let database: GatewayDatabase
    /// Freed pages are zeroed (secure_delete); this empties the WAL soon after, so its old page images go too.
    let checkpointer: WALCheckpointer

    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        try await database.recordedErasure(erasureId).map { ErasureResult(outcome: $0) }
    }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        let outcome = try await database.erase(command)
        checkpointer.request()
        return ErasureResult(outcome: outcome)
    }
}
