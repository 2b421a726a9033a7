import Contracts
import Messaging
import ServiceKit

/// How many records each dead-letter topic holds, from the broker's watermarks: nothing in Lethe consumes a DLQ,
/// so what it holds is what an operator has not dealt with yet (or what its retention has not dropped: 30 days, or
/// the source topic's when shorter).
struct DeadLetterDepths: Sendable {
    let admin: KafkaAdmin
    let namespace: TopicNamespace
    /// How long the broker may take per question (a page waits for the slowest part).
    var timeout: Duration = .seconds(5)

    /// Every DLQ of ``Topics/all``, in its order.
    var topics: [String] {
        Topics.all.filter(\.deadLettered).map { Topics.dlq(for: namespace.name($0.name)) }
    }

    func depths() async -> ConsoleSnapshot.Part<[DeadLetterDepth]> {
        var depths: [DeadLetterDepth] = []
        for topic in topics {
            do {
                depths.append(
                    DeadLetterDepth(topic: topic, records: try await admin.recordCount(of: topic, timeout: timeout)))
            } catch {
                return .unavailable("the broker did not answer for \(topic): \(error.name)")
            }
        }
        return .loaded(depths)
    }
}
