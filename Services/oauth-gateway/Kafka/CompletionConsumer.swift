import Contracts
import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Storage

/// Consumes `lethe.erasure.completed.v1` for the tenants' Shared Signals streams: a completed erasure of a user the
/// gateway noted when it applied the erasure becomes that tenant's `account-purged` event (``GatewayDatabase/
/// noteErasureCompleted(_:now:)``), queued in the same transaction as the record is forgotten, committed after.
final class CompletionConsumer: Service, Sendable {
    private let pipeline: ConsumerPipeline<ErasureCompleted>
    private let database: GatewayDatabase

    init(consumer: KafkaConsumer, database: GatewayDatabase, producer: KafkaProducer, logger: Logger) {
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "security events", retry: .storage,
            maxBatch: 100
        ) { message in try message.decodeEvent(ErasureCompleted.self) }
        self.database = database
    }

    func run() async throws {
        try await pipeline.run { batch in
            for record in batch {
                try await self.database.noteErasureCompleted(record.item)
            }
            return []
        }
    }
}
