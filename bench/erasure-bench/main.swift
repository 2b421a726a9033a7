// The Swift half of `make bench-erasure` (bench/erasure.sh starts the broker-side processes and runs it).
//
// usage: erasure-bench prepare <bootstrap> <namespace> <count> <partitions>
//            creates the tenants and profiles topics, publishes TenantConfigured for the 4 bench tenants and one
//            ProfileFetched per bench account (so profile-store holds every account the statuses will close)
//        erasure-bench wait-held <bootstrap> <namespace> <count> <timeout-seconds> <profile-store-pid>
//            reads <ns>.lethe.pdr.accounts.v1 until profile-store announced all <count> bench accounts (AccountHeld
//            is written in the transaction that stores the profile, so this means "committed in its SQLite")
//        erasure-bench run <bootstrap> <namespace> <count> <rate> <timeout-seconds> <executor-pid> <profile-store-pid>
//            runs two in-process ErasureKit participants, waits until a warm-up erasure completes with all three
//            participants, then publishes <count> closed statuses at <rate>/s and reads
//            <ns>.lethe.erasure.completed.v1 until every one completed. Prints the result; the last line is
//            "erasure: <n> completed, p50 <ms> ms, p99 <ms> ms at <rate>/s, <c> ms CPU per erasure (executor)".
//        erasure-bench probe <bootstrap> <namespace> <count>
//            the per-record Kafka costs of a serial participant / intake on this broker: an awaited single send
//            (linger 5 ms and 0 ms) and a synchronous offset commit per record (not part of make bench-erasure)
//
// Latency is measured on this process's monotonic clock at both ends: from just before the status is handed to the
// producer to when its ErasureCompleted is read. ErasureCompleted names no account (only an HMAC subject), so the
// bench participants record erasureId → account when the command reaches them; they must ack before the executor
// can complete, so the mapping always exists by the time the completion is read.
import Contracts
import Foundation
import Logging
import Messaging
import ServiceLifecycle

let arguments = CommandLine.arguments

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("erasure-bench: \(message)\n".utf8))
    exit(1)
}

func note(_ message: String) {
    FileHandle.standardError.write(Data("erasure-bench: \(message)\n".utf8))
}

func makeLogger() -> Logger {
    var logger = Logger(label: "erasure-bench")
    logger.logLevel = .warning
    return logger
}

func isAlive(_ pid: Int32) -> Bool { kill(pid, 0) == 0 }

/// Exits with the reason when a watched process is gone or the deadline passed.
func watchdog(pids: [(String, Int32)], deadline: ContinuousClock.Instant, what: @escaping @Sendable () -> String)
    -> Task<Void, Never>
{
    Task {
        while !Task.isCancelled {
            for (name, pid) in pids where !isAlive(pid) { fail("\(name) (pid \(pid)) exited") }
            if ContinuousClock.now >= deadline { fail("timed out: \(what())") }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }
}

// MARK: The bench data set

let tenantPolicies: [ErasurePolicy] = [.delete, .scrub, .disassociate, .delete]
let apps = ["app-0", "app-1"]
func tenantId(_ index: Int) -> String { "tenant-\(index % tenantPolicies.count)" }
func appId(_ index: Int) -> String { apps[index % apps.count] }
func accountId(_ index: Int) -> String { "557058:erasure-bench-\(index)" }
func warmupAccount(_ round: Int) -> String { "557058:erasure-warmup-\(round)" }

/// Runs `body` with a started producer, then flushes it.
func withProducer(_ bootstrap: String, _ body: @Sendable (KafkaProducer) async throws -> Void) async throws {
    let logger = makeLogger()
    let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        try await body(producer)
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

// MARK: main

switch arguments.count > 1 ? arguments[1] : "" {
case "prepare" where arguments.count == 6:
    guard let count = Int(arguments[4]), let partitions = Int(arguments[5]) else { fail("bad numbers") }
    try await prepare(bootstrap: arguments[2], namespace: arguments[3], count: count, partitions: partitions)
case "wait-held" where arguments.count == 7:
    guard let count = Int(arguments[4]), let timeout = Double(arguments[5]), let pid = Int32(arguments[6]) else {
        fail("bad numbers")
    }
    try await waitHeld(bootstrap: arguments[2], namespace: arguments[3], count: count, timeout: timeout, pid: pid)
case "run" where arguments.count == 9:
    guard let count = Int(arguments[4]), let rate = Double(arguments[5]), let timeout = Double(arguments[6]),
          let executor = Int32(arguments[7]), let profileStore = Int32(arguments[8]), count > 0, rate > 0
    else { fail("bad numbers") }
    try await run(
        bootstrap: arguments[2], namespace: arguments[3], count: count, rate: rate, timeout: timeout,
        executorPid: executor, profileStorePid: profileStore)
    exit(0)
case "probe" where arguments.count == 5:
    guard let count = Int(arguments[4]) else { fail("bad numbers") }
    try await probe(bootstrap: arguments[2], namespace: arguments[3], count: count)
    exit(0)
default:
    fail("""
        usage: erasure-bench prepare <bootstrap> <ns> <count> <partitions> | \
        wait-held <bootstrap> <ns> <count> <timeout> <pid> | \
        run <bootstrap> <ns> <count> <rate> <timeout> <executor-pid> <profile-store-pid> | \
        probe <bootstrap> <ns> <count>
        """)
}
