// The Swift half of `make bench-ingest` (bench/ingest.sh runs it, kcat and profile-store on the same broker).
//
// usage: ingest-bench produce <bootstrap> <topic> <count> <partitions>
//            creates the topic and produces <count> ProfileFetched (distinct accounts, 4 tenants, 2 apps);
//            prints "produced <count> <seconds>"
//        ingest-bench wait <sqlite-file> <count> <pid> <timeout-seconds>
//            polls profile-store's SQLite file until <count> profiles are committed; prints
//            "first <epoch-seconds> last <epoch-seconds> rss_kb <peak RSS of pid>"
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

/// VmHWM (peak resident set) of a process, in kB; 0 when unreadable.
func peakRSS(of pid: String) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
    else { return 0 }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
}

switch arguments.count > 1 ? arguments[1] : "" {
case "produce" where arguments.count == 6:
    let (bootstrap, topic) = (arguments[2], arguments[3])
    guard let count = Int(arguments[4]), let partitions = Int(arguments[5]) else { fail("bad numbers") }
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
        TopicSpec(name: topic, partitions: partitions, config: Topics.definition(named: Topics.profiles)!.kafkaConfig),
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
    var peak = 0
    while Date() < deadline {
        peak = max(peak, peakRSS(of: pid))
        if pool == nil, FileManager.default.fileExists(atPath: path) {
            pool = try? DatabasePool(path: path, configuration: configuration)
        }
        let committed = (try? pool?.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM profiles") }) ?? nil
        if let committed, committed > 0, first == nil { first = Date() }
        if let committed, committed >= count {
            peak = max(peak, peakRSS(of: pid))
            print("first \(first!.timeIntervalSince1970) last \(Date().timeIntervalSince1970) rss_kb \(peak)")
            exit(0)
        }
        try await Task.sleep(for: .milliseconds(10))
    }
    fail("timed out waiting for \(count) profiles")

default:
    fail("usage: ingest-bench produce <bootstrap> <topic> <count> <partitions> | wait <sqlite> <count> <pid> <timeout>")
}
