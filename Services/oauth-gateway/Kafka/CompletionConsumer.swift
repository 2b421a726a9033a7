import Contracts
import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Storage

/// Consumes `lethe.erasure.completed.v1` for the tenants' Shared Signals streams: a completed erasure of a user the
/// gateway noted when it applied the erasure becomes that tenant's `account-purged` event (``GatewayDatabase/
/// noteErasureCompleted(_:now:)``), queued in the same transaction as the record is forgotten, committed once the
/// changelog holds them.
final class CompletionConsumer: Service, Sendable {
    private let pipeline: ConsumerPipeline<ErasureCompleted>
    private let database: GatewayDatabase
    private let durability: Durability
    private let logger: Logger

    init(
        consumer: KafkaConsumer, database: GatewayDatabase, durability: Durability, producer: KafkaProducer,
        logger: Logger
    ) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "security events", retry: .storage,
            maxBatch: 100
        ) { message in try message.decodeEvent(ErasureCompleted.self) }
        self.database = database
        self.durability = durability
        self.logger = logger
    }

    func run() async throws {
        try await pipeline.run { batch in
            for record in batch {
                let queued = try await self.database.noteErasureCompleted(record.item)
                if queued > 0 {
                    self.logger.info("account-purged queued for a completed erasure", metadata: [
                        "erasure": "\(record.item.erasureId)", "tenant": "\(record.item.tenantId)", "events": "\(queued)",
                    ])
                }
            }
            // The queued events in the changelog before the offset is committed: else a replica killed in between
            // would leave the one that takes over without them, and the completion consumed.
            try await self.durability.wait()
            return []
        }
    }
}
