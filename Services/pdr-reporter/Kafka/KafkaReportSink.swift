import Contracts
import Foundation
import Messaging
import Metrics

/// The production `ReportSink`: `AccountReported` to the changelog topic and `AccountStatusReported` to the status
/// topic, returning only once the broker acknowledged every record (`acks=all`, idempotent producer).
///
/// Both are keyed `appId:accountId` and partitioned by the producer's murmur2 partitioner, the one that placed the
/// account's `AccountHeld`: with equal partition counts, an account's changelog record lands on the reports partition
/// with the same number as its accounts partition, which is what a restore of partition p reads. The CloudEvents id is
/// derived from the account, the report time and the next due time, so a re-sent record of the same report is recognisable as such.
final class KafkaReportSink: ReportSink {
    private let producer: KafkaProducer
    private let topics: LetheTopics

    static let source = "lethe/pdr-reporter"

    init(producer: KafkaProducer, topics: LetheTopics) {
        self.producer = producer
        self.topics = topics
    }

    func publish(reported: [AccountReported], statuses: [AccountStatusReported]) async throws {
        var messages: [OutgoingMessage] = []
        messages.reserveCapacity(reported.count + statuses.count)
        for report in reported { messages.append(try changelogMessage(report)) }
        // After the records they supersede (same key, same partition, sent in order).
        for status in statuses where status.status == .closed {
            let key = try AccountKey(appId: status.appId, accountId: status.accountId).rawValue
            messages.append(.tombstone(topic: topics.pdrReports, key: key))
        }
        for status in statuses {
            let key = try AccountKey(appId: status.appId, accountId: status.accountId).rawValue
            messages.append(try OutgoingMessage(
                event: status, topic: topics.pdrStatus, key: key, source: Self.source,
                id: "status:\(key):\(Self.milliseconds(status.reportedAt))"))
        }
        try await producer.send(messages)
        // Counted only once acknowledged: these are the reports that can no longer be lost.
        if let appId = reported.first?.appId {
            Counter(label: "lethe_pdr_accounts_reported_total", dimensions: [("app_id", appId)])
                .increment(by: reported.count)
        }
        for status in statuses {
            Counter(label: "lethe_pdr_status_events_total", dimensions: [("status", status.status.rawValue)]).increment()
        }
    }

    /// Not counted as reports: no call was made, only the accounts' next due times moved with the app's cycle.
    func republish(_ rescheduled: [AccountReported]) async throws {
        try await producer.send(try rescheduled.map(changelogMessage))
    }

    /// The id carries the next due time too: a record rescheduled to a new cycle has the same report time as the
    /// report it revises but is a different event.
    private func changelogMessage(_ report: AccountReported) throws -> OutgoingMessage {
        let key = try AccountKey(appId: report.appId, accountId: report.accountId).rawValue
        return try OutgoingMessage(
            event: report, topic: topics.pdrReports, key: key, source: Self.source,
            id: "reported:\(key):\(Self.milliseconds(report.reportedAt)):\(Self.milliseconds(report.nextDueAt))")
    }

    private static func milliseconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }
}
