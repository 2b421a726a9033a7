import Foundation
import Messaging
import Testing
import TestSupport

@Suite("The batch queue between a consumer reader and a batch loop")
struct BatchQueueTests {
    func message(_ offset: Int64) -> KafkaMessage {
        KafkaMessage(topic: "t", partition: 0, offset: offset, key: nil, value: nil)
    }

    @Test("batches hold what arrived, in order, a full queue holds the pusher back, and finish drains")
    func batchesAndBackPressure() async throws {
        let queue = BatchQueue<KafkaMessage>(capacity: 4)
        let pushed = LockedValue(0)
        let pusher = Task {
            for offset in 0..<10 {
                await queue.push(message(Int64(offset)))
                pushed.withValue { $0 += 1 }
            }
            queue.finish()
        }
        #expect(await eventually(timeout: .seconds(30)) { pushed.withValue { $0 } == 4 })
        try await Task.sleep(for: .milliseconds(100))
        #expect(pushed.withValue { $0 } == 4, "the pusher went past a full queue")
        var offsets: [Int64] = []
        while let batch = await queue.takeBatch(max: 3) {
            #expect(batch.count <= 3)
            offsets += batch.map(\.offset)
        }
        await pusher.value
        #expect(offsets == Array(0..<10))
    }

    @Test("a revocation waits until the records taken before it are processed")
    func revocationWaitsForProcessing() async throws {
        let queue = BatchQueue<KafkaMessage>(capacity: 10)
        for offset in 0..<3 { await queue.push(message(Int64(offset))) }
        let released = LockedValue(false)
        let revocation = Task {
            await queue.waitUntilProcessed(3)
            released.withValue { $0 = true }
        }
        let batch = try #require(await queue.takeBatch(max: 10))
        try await Task.sleep(for: .milliseconds(100))
        #expect(released.withValue { $0 } == false, "released before the batch was processed")
        queue.markProcessed(batch.count)
        await revocation.value
        #expect(released.withValue { $0 })
    }
}
