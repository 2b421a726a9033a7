import Foundation
import Metrics

/// The executor's metrics, named `lethe_erasure…`.
struct ErasureMetrics: Sendable {
    let intake = Counter(label: "lethe_erasures_requested_total")
    let completed = Counter(label: "lethe_erasures_completed_total")
    let resent = Counter(label: "lethe_erasure_commands_resent_total")
    let ackLatency = Metrics.Timer(label: "lethe_erasure_ack_latency_seconds")
    let open = Gauge(label: "lethe_erasures_open")
    let overdue = Gauge(label: "lethe_erasures_overdue")
    /// Participant declarations that could not be read (each time one is read, a restart included): the alert.
    let declarationsRejected = Counter(label: "lethe_erasure_participant_declarations_rejected_total")
    /// Participants whose current declaration is rejected (erasures wait for them all the same).
    let participantsRejected = Gauge(label: "lethe_erasure_participants_rejected")
    /// Tenants' `deadlineDays` above 30, capped.
    let deadlineCapped = Counter(label: "lethe_erasure_tenant_deadline_capped_total")
    /// 1 once the state topics were read to their end since the start, 0 until then.
    let restored = Gauge(label: "lethe_erasure_state_restored")
    /// Participants retired by an operator, and the participant outcomes that became `waived`.
    let retired = Counter(label: "lethe_erasure_participants_retired_total")
    let waived = Counter(label: "lethe_erasure_outcomes_waived_total")

    func update(_ counts: LedgerCounts) {
        open.record(counts.open)
        overdue.record(counts.overdue)
        participantsRejected.record(counts.rejectedDeclarations)
        for (status, count) in counts.byStatus {
            Gauge(label: "lethe_erasures", dimensions: [("status", status.rawValue)]).record(count)
        }
    }
}

extension Metrics.Timer {
    func recordSeconds(_ seconds: TimeInterval) {
        recordNanoseconds(Int64(max(0, seconds) * 1_000_000_000))
    }
}
