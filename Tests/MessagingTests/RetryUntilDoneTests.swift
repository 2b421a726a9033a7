import Logging
import Messaging
import Synchronization
import Testing

@Suite("retryUntilDone")
struct RetryUntilDoneTests {
    struct Transient: Error {}

    @Test("a transient failure is retried until the operation succeeds")
    func retriesTransientFailures() async throws {
        let attempts = Atomic(0)
        let value = try await retryUntilDone("test operation", logger: Logger(label: "test")) {
            let attempt = attempts.add(1, ordering: .relaxed).newValue
            if attempt < 3 { throw Transient() }
            return attempt
        }
        #expect(value == 3)
    }

    @Test("a fatal Kafka error is thrown at once, not retried for ever")
    func fatalKafkaErrorIsNotRetried() async throws {
        let attempts = Atomic(0)
        let fatal = KafkaError(code: -150, name: "_FATAL", message: "fenced", isRetriable: false, isFatal: true)
        await #expect(throws: fatal) {
            try await retryUntilDone("test operation", logger: Logger(label: "test")) {
                attempts.add(1, ordering: .relaxed)
                throw fatal
            }
        }
        #expect(attempts.load(ordering: .relaxed) == 1)
    }
}
