import Foundation
import Messaging
import Testing
import TestSupport

@Suite("A consumer process killed mid-stream")
struct CrashRecoveryTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("crash") }

    @Test("kill -9 and restart: nothing lost, duplicates only from the uncommitted tail")
    func killNineLosesNothing() async throws {
        let topic = try await kafka.makeTopic(partitions: 3)
        let group = uniqueName("g")
        let total = 6000
        let commitEvery = 100
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            try await producer.send((0..<total).map {
                OutgoingMessage(topic: topic, key: "k\($0 % 97)", value: Array("v\($0)".utf8))
            })
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("\(group).log")
        defer {
            try? FileManager.default.removeItem(at: output)
            try? FileManager.default.removeItem(atPath: output.path + ".log")
        }
        let binary = RepositoryPaths.executable("kafka-test-consumer")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        /// The first process pauses 1 ms per record (6000 records: at least 6 s), so the kill lands mid-stream even
        /// when a loaded machine makes this test's polling slow; the second runs at full speed.
        func launch(pauseMicroseconds: Int = 0) throws -> ChildProcess {
            try ChildProcess.spawn(
                binary.path,
                arguments: [
                    kafka.bootstrapServers, topic, group, output.path, String(commitEvery), String(pauseMicroseconds),
                ],
                stdoutPath: output.path + ".log")
        }
        func lines() -> [Substring] {
            (try? String(contentsOf: output, encoding: .utf8))?.split(separator: "\n") ?? []
        }

        let first = try launch(pauseMicroseconds: 1000)
        let midStream = await eventually(timeout: .seconds(60), every: .milliseconds(5)) {
            lines().count(where: { $0.hasPrefix("M ") }) >= total / 3
        }
        let killed = first.killAndReap()
        #expect(midStream)
        #expect(killed == 128 + SIGKILL)
        let beforeRestart = lines()
        let committed = Self.committedOffsets(in: beforeRestart)
        let processedBefore = beforeRestart.count(where: { $0.hasPrefix("M ") })
        #expect(processedBefore < total, "the first process finished before it was killed; the test proves nothing")

        let second = try launch()
        defer { second.killAndReap() }
        let finished = await eventually(timeout: .seconds(90), every: .milliseconds(100)) {
            Set(lines().filter { $0.hasPrefix("M ") }.map { $0.split(separator: " ")[3] }).count == total
        }
        #expect(finished, "not every record was processed after the restart")

        let records = lines().filter { $0.hasPrefix("M ") }.map { $0.split(separator: " ") }
        Self.expectDuplicatesOnlyFromTheUncommittedTail(records, committed: committed, commitEvery: commitEvery)
        #expect(Set(records.map { $0[3] }).count == total)
    }

    /// What the crashed process had committed, per partition (its `C <partition> <next-offset>` lines): everything
    /// below it must not come back.
    private static func committedOffsets(in lines: [Substring]) -> [String: Int64] {
        var committed: [String: Int64] = [:]
        for line in lines where line.hasPrefix("C ") {
            let parts = line.split(separator: " ")
            committed[String(parts[1])] = max(committed[String(parts[1])] ?? 0, Int64(parts[2])!)
        }
        return committed
    }

    /// `records`: the `M <partition> <offset> <value>` lines of both processes, split. Each record processed twice must
    /// come from the uncommitted tail of its partition, and the tail is bounded by one batch between commits.
    private static func expectDuplicatesOnlyFromTheUncommittedTail(
        _ records: [[Substring]], committed: [String: Int64], commitEvery: Int
    ) {
        var seen: [String: Int] = [:]
        for record in records { seen["\(record[1]):\(record[2])", default: 0] += 1 }
        let duplicates = seen.filter { $0.value > 1 }
        // Each redelivered record must come from the uncommitted tail of its partition.
        for (position, _) in duplicates {
            let parts = position.split(separator: ":")
            #expect(Int64(parts[1])! >= committed[String(parts[0])] ?? 0, "record \(position) was committed yet redelivered")
        }
        // The tail is bounded by what one batch between commits can hold.
        #expect(duplicates.count <= commitEvery, "\(duplicates.count) duplicates")
    }
}
