// The Swift half of `make bench-ingest` (bench/ingest.sh runs it, kcat and profile-store on the same broker).
//
// usage: ingest-bench produce <bootstrap> <topic> <count> <partitions>
//            creates the topic and produces <count> ProfileFetched (distinct accounts, 4 tenants, 2 apps);
//            prints "produced <count> <seconds>"
//        ingest-bench wait <sqlite-file> <count> <pid> <timeout-seconds>
//            polls profile-store's SQLite file until <count> profiles are committed, then until its outbox is drained
//            (every AccountHeld published, and so deleted from the outbox); prints "first <epoch-seconds> first_count
//            <profiles seen then> last <epoch-seconds> drained <epoch-seconds> rss_kb <peak RSS of pid> cpu_at_last
//            <CPU seconds of pid> cpu_at_drained <…> announced <accounts announced>"
import BenchSupport
import Contracts
import Foundation
import GRDB
import Logging
import Messaging
import ServiceLifecycle

var logger = Logger(label: "ingest-bench")
logger.logLevel = .warning
let arguments = CommandLine.arguments

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ingest-bench: \(message)\n".utf8))
    exit(1)
}

switch arguments.count > 1 ? arguments[1] : "" {
case "produce" where arguments.count == 6:
    let (bootstrap, topic) = (arguments[2], arguments[3])
    guard let count = Int(arguments[4]), let partitions = Int(arguments[5]) else { fail("bad numbers") }
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
        TopicSpec(name: topic, partitions: partitions, config: Topics.profiles.kafkaConfig),
    ])
    let base = Date()
    var messages: [OutgoingMessage] = []
    messages.reserveCapacity(count)
    for index in 0..<count {
        let event = ProfileFetched(
            tenantId: "tenant-\(index % 4)", appId: "app-\(index % 2)", accountId: "557058:bench-\(index)",
            name: "Bench User \(index)", email: "user\(index)@example.com", nickname: "user\(index)",
            picture: "https://avatar.example/\(index).png", fetchedAt: base.addingTimeInterval(Double(index) / 1000))
        messages.append(try OutgoingMessage(
            event: event, topic: topic, key: "\(event.appId):\(event.accountId)", source: "lethe/ingest-bench"))
    }
    let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
    let start = Date()
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        for chunk in stride(from: 0, to: count, by: 10_000) {
            try await producer.send(Array(messages[chunk..<min(count, chunk + 10_000)]))
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    print("produced \(count) \(Date().timeIntervalSince(start))")

case "wait" where arguments.count == 6:
    let (path, pid) = (arguments[2], arguments[4])
    guard let count = Int(arguments[3]), let timeout = Double(arguments[5]) else { fail("bad numbers") }
    let deadline = Date().addingTimeInterval(timeout)
    var configuration = Configuration()
    configuration.readonly = true
    var pool: DatabasePool?
    var first: Date?
    var firstCount = 0
    var last: Date?
    var cpuAtLast = 0.0
    var peak = 0
    while Date() < deadline {
        peak = max(peak, ProcessStats.peakRSSKiB(pid: Int32(pid) ?? 0))
        if pool == nil, FileManager.default.fileExists(atPath: path) {
            pool = try? DatabasePool(path: path, configuration: configuration)
        }
        // max(id), not count(*): a count scans a whole index (about a millisecond at 100k rows), and polling that
        // every 10 ms would take CPU from the service on a two-core machine. The bench's accounts are all distinct and
        // nothing is deleted, so the highest row id is the number of rows; the count is checked once at the end.
        if last == nil {
            let highest = (try? pool?.read { db in try Int.fetchOne(db, sql: "SELECT max(id) FROM profiles") }) ?? nil
            // The first observation already holds a whole batch (its transaction ran before the clock started):
            // the rate counts only what was committed after it.
            if let highest, highest > 0, first == nil {
                first = Date()
                firstCount = highest
            }
            if let highest, highest >= count {
                last = Date()
                cpuAtLast = ProcessStats.cpuSeconds(pid: Int32(pid) ?? 0)
                let committed = try pool!.read { db in
                    try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles")
                }
                guard committed == count else { fail("\(committed ?? 0) profiles, expected \(count)") }
            }
        }
        if let last {
            // The relay catches up when no outbox record is left unsent (an index lookup on the unsent index).
            let unsent = try pool!.read { db in
                try Int.fetchOne(
                    db, sql: "SELECT count(*) FROM (SELECT 1 FROM lethe_outbox WHERE sent_at IS NULL LIMIT 1)")
            }
            if unsent == 0 {
                let announced = try pool!.read { db in
                    try Int.fetchOne(db, sql: "SELECT count(*) FROM announced_accounts")
                }
                peak = max(peak, ProcessStats.peakRSSKiB(pid: Int32(pid) ?? 0))
                print("first \(first!.timeIntervalSince1970) first_count \(firstCount) last \(last.timeIntervalSince1970) "
                    + "drained \(Date().timeIntervalSince1970) rss_kb \(peak) cpu_at_last \(cpuAtLast) "
                    + "cpu_at_drained \(ProcessStats.cpuSeconds(pid: Int32(pid) ?? 0)) announced \(announced ?? 0)")
                exit(0)
            }
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    fail(last == nil ? "timed out waiting for \(count) profiles" : "timed out waiting for the outbox to drain")

default:
    fail("usage: ingest-bench produce <bootstrap> <topic> <count> <partitions> | wait <sqlite> <count> <pid> <timeout>")
}
