import Contracts

/// Where a successful PDR call's consequences go before the batch counts as done.
///
/// The Kafka implementation (`KafkaReportSink`) produces `AccountReported` to `lethe.pdr.reports.v1` and
/// `AccountStatusReported` to `lethe.pdr.status.v1` and returns only once the broker acknowledged both. The
/// reporter calls it *before* updating its registry, so the order after a call is: sink (durable events), then
/// registry (which is what stops the accounts being due). A crash before the sink returns re-sends exactly that
/// batch after restart (it is still due); a crash between sink and registry re-sends it too, and the duplicate
/// events are harmless because every consumer is idempotent per `appId:accountId`.
package protocol ReportSink: Sendable {
    /// Publishes one batch's changelog records (one per account sent) and its status events (closed/updated only).
    /// An account answered `closed` gets a changelog tombstone after its record: it will never be held again, so
    /// nothing needs its last report, and its accountId must not stay in the compacted changelog after its erasure.
    func publish(reported: [AccountReported], statuses: [AccountStatusReported]) async throws
    /// Publishes changelog records that move reported accounts to a new cycle (no call was made: not counted as
    /// reports). Returns once durable, like `publish`.
    func republish(_ rescheduled: [AccountReported]) async throws
}

extension ReportSink {
    package func republish(_ rescheduled: [AccountReported]) async throws {
        try await publish(reported: rescheduled, statuses: [])
    }
}
