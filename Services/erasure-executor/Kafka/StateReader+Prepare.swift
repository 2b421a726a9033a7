import Contracts
import Foundation
import Logging
import Messaging

extension StateReader {
    /// What one state record means to the ledger: a restore marker, a change (a tenant or participant upserted or,
    /// as a tombstone, removed; a participant retired), or a record for the DLQ with the reason — a rejected declaration still keeps its
    /// participant, named by the record key. Runs on the pipeline's reading task; never throws.
    static func prepare(
        _ message: KafkaMessage, topics: LetheTopics, metrics: ErasureMetrics, logger: Logger
    ) -> Prepared.Kind {
        if let marker = RestoreMarker.id(of: message) {
            return .marker(marker)
        }
        let key = message.keyString.flatMap { $0.isEmpty ? nil : $0 }
        if message.value == nil {
            // A marker without its header would be odd, but it is never a tenant or participant leaving.
            guard let key, key != RestoreMarker.key else { return .reject("tombstone without a usable key", keep: nil, key: nil) }
            switch message.topic {
            case topics.tenants: return .apply(.removeTenant(key), key: key, live: false)
            case topics.erasureParticipants: return .apply(.removeParticipant(key), key: key, live: false)
            default: return .reject("record from an unexpected topic", keep: nil, key: nil)
            }
        }
        switch message.topic {
        case topics.tenants:
            do {
                var event = try message.decodeEvent(TenantConfigured.self)
                guard !event.tenantId.isEmpty, key == event.tenantId else {
                    return .reject("the record key is not the event's tenantId", keep: nil, key: key)
                }
                guard event.deadlineDays >= 1 else {
                    return .reject("deadlineDays must be at least 1 (it is at most 30)", keep: nil, key: key)
                }
                if event.deadlineDays > ErasureLedger.maximumDeadlineDays {
                    logger.warning("a tenant's deadlineDays above 30 is capped at 30", metadata: [
                        "tenant": "\(event.tenantId)", "deadlineDays": "\(event.deadlineDays)",
                    ])
                    metrics.deadlineCapped.increment()
                    event.deadlineDays = ErasureLedger.maximumDeadlineDays
                }
                return .apply(.tenant(event), key: event.tenantId, live: true)
            } catch {
                return .reject("\(error)", keep: nil, key: key)
            }
        case topics.erasureParticipants:
            let at = message.timestampMilliseconds.map { Date(milliseconds: $0) } ?? Date()
            do {
                if message.stringHeaders["ce_type"] == ParticipantRetired.eventType {
                    let event = try message.decodeEvent(ParticipantRetired.self)
                    guard !event.participant.isEmpty, key == event.participant else {
                        let reason = "the record key is not the retired participant"
                        return .reject(reason, keep: key.map { .rejectedParticipant(name: $0, reason: reason, at: at) }, key: key)
                    }
                    // It supersedes the declaration: the participant is not declared at the end of the restore.
                    return .apply(.retired(event), key: event.participant, live: false)
                }
                let event = try message.decodeEvent(ParticipantDeclared.self)
                guard !event.participant.isEmpty, key == event.participant else {
                    let reason = "the record key is not the event's participant"
                    return .reject(reason, keep: key.map { .rejectedParticipant(name: $0, reason: reason, at: at) }, key: key)
                }
                return .apply(.participant(event), key: event.participant, live: true)
            } catch {
                let reason = "\(error)"
                return .reject(reason, keep: key.map { .rejectedParticipant(name: $0, reason: reason, at: at) }, key: key)
            }
        default:
            return .reject("record from an unexpected topic", keep: nil, key: nil)
        }
    }
}
