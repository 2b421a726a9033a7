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
import BenchSupport
import ErasureKit
import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Synchronization

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

func spec(_ name: String, like architectureName: String, partitions: Int) -> TopicSpec {
    TopicSpec(name: name, partitions: partitions, config: Topics.definition(named: architectureName)!.kafkaConfig)
}

// MARK: prepare

func prepare(bootstrap: String, namespace: String, count: Int, partitions: Int) async throws {
    let topics = LetheTopics(namespace: namespace)
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: makeLogger()).ensureTopics([
        spec(topics.tenants, like: Topics.tenants, partitions: partitions),
        spec(topics.profiles, like: Topics.profiles, partitions: partitions),
    ])
    var tenants: [OutgoingMessage] = []
    for (index, policy) in tenantPolicies.enumerated() {
        let event = TenantConfigured(
            tenantId: "tenant-\(index)", erasurePolicy: policy,
            apps: apps.map { TenantConfigured.App(appId: $0, shared: false) }, deadlineDays: 30)
        tenants.append(try OutgoingMessage(
            event: event, topic: topics.tenants, key: event.tenantId, source: "lethe/erasure-bench"))
    }
    let base = Date().addingTimeInterval(-3600)
    var profiles: [OutgoingMessage] = []
    profiles.reserveCapacity(count)
    for index in 0..<count {
        let event = ProfileFetched(
            tenantId: tenantId(index), appId: appId(index), accountId: accountId(index),
            name: "Bench User \(index)", email: "user\(index)@example.com", nickname: "user\(index)",
            picture: "https://avatar.example/\(index).png", fetchedAt: base.addingTimeInterval(Double(index) / 1000))
        profiles.append(try OutgoingMessage(
            event: event, topic: topics.profiles, key: "\(event.appId):\(event.accountId)",
            source: "lethe/erasure-bench"))
    }
    let start = ContinuousClock.now
    let batches = [tenants, profiles]
    try await withProducer(bootstrap) { producer in
        for batch in batches { try await producer.send(batch) }
    }
    note("published \(tenants.count) TenantConfigured and \(count) ProfileFetched in \(ContinuousClock.now - start)")
}

// MARK: wait-held

func waitHeld(bootstrap: String, namespace: String, count: Int, timeout: Double, pid: Int32) async throws {
    let topics = LetheTopics(namespace: namespace)
    let deadline = ContinuousClock.now + .seconds(timeout)
    let seen = Mutex<Set<String>>([])
    let dog = watchdog(pids: [("profile-store", pid)], deadline: deadline) {
        "profile-store announced \(seen.withLock { $0.count }) of \(count) accounts"
    }
    let logger = makeLogger()
    let admin = try KafkaAdmin(bootstrapServers: bootstrap, logger: logger)
    var partitions = 0
    while partitions == 0 {
        partitions = (try? await admin.partitionCount(of: topics.pdrAccounts)) ?? 0
        if partitions == 0 { try await Task.sleep(for: .milliseconds(200)) }
    }
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap,
            subscription: .partitions((0..<partitions).map {
                (TopicPartition(topic: topics.pdrAccounts, partition: Int32($0)), offset: KafkaConsumer.beginning)
            }),
            clientId: "erasure-bench-held"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: consumer)], logger: logger))
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        for try await message in consumer.messages {
            guard message.value != nil, let key = message.keyString, key.contains(":557058:erasure-bench-") else {
                continue
            }
            if seen.withLock({ $0.insert(key); return $0.count }) >= count { break }
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    dog.cancel()
    note("profile-store holds all \(count) bench accounts (AccountHeld read in \(ContinuousClock.now - start))")
}

// MARK: run

/// What the run observed, shared by the participants' handlers, the completion reader and the sender.
final class Tracker: Sendable {
    struct State {
        var accountIndex: [String: Int] = [:]
        /// erasureId → accountId, recorded by the bench participants when the command reaches them.
        var erasureAccount: [String: String] = [:]
        /// per participant: erasureId → result (the ErasureKit idempotency record).
        var recorded: [String: [String: ErasureResult]] = [:]
        var published: [ContinuousClock.Instant?]
        var publishedWall: [Date?]
        /// first time a bench participant saw the command of bench account i (wall clock, to compare with acks).
        var commandSeenWall: [Date?]
        var completed: [ContinuousClock.Instant?]
        var completedEvents: [ErasureCompleted?]
        var completedCount = 0
        var duplicates = 0
        var unknown = 0
        var commandsReceived = 0
        /// warm-up account → participants in its ErasureCompleted
        var warmups: [String: [String]] = [:]
    }

    let state: Mutex<State>

    init(count: Int) {
        var state = State(
            published: Array(repeating: nil, count: count), publishedWall: Array(repeating: nil, count: count),
            commandSeenWall: Array(repeating: nil, count: count), completed: Array(repeating: nil, count: count),
            completedEvents: Array(repeating: nil, count: count))
        for index in 0..<count { state.accountIndex[accountId(index)] = index }
        self.state = Mutex(state)
    }

    func recorded(_ participant: String, _ erasureId: String) -> ErasureResult? {
        state.withLock { $0.recorded[participant]?[erasureId] }
    }

    func apply(_ participant: String, _ command: EraseSubject) -> ErasureResult {
        let now = Date()
        return state.withLock { state in
            state.commandsReceived += 1
            state.erasureAccount[command.erasureId] = command.accountId
            let outcome: ErasureOutcome
            if let index = state.accountIndex[command.accountId] {
                if state.commandSeenWall[index] == nil { state.commandSeenWall[index] = now }
                outcome = switch command.policy {
                case .delete: .erased
                case .scrub: .scrubbed
                case .disassociate: .disassociated
                }
            } else {
                outcome = .nothingHeld
            }
            let result = ErasureResult(outcome: outcome)
            state.recorded[participant, default: [:]][command.erasureId] = result
            return result
        }
    }

    func published(_ range: Range<Int>, at instant: ContinuousClock.Instant, wall: Date) {
        state.withLock { state in
            for index in range {
                state.published[index] = instant
                state.publishedWall[index] = wall
            }
        }
    }

    func completed(_ event: ErasureCompleted, at instant: ContinuousClock.Instant) {
        state.withLock { state in
            guard let account = state.erasureAccount[event.erasureId] else {
                state.unknown += 1
                return
            }
            guard let index = state.accountIndex[account] else {
                state.warmups[account] = event.outcomes.map(\.participant).sorted()
                return
            }
            if state.completed[index] != nil {
                state.duplicates += 1
                return
            }
            state.completed[index] = instant
            state.completedEvents[index] = event
            state.completedCount += 1
        }
    }

    var completedCount: Int { state.withLock { $0.completedCount } }
    func warmup(_ account: String) -> [String]? { state.withLock { $0.warmups[account] } }
}

struct BenchHandler: ErasureHandler {
    let participant: String
    let tracker: Tracker

    func recordedResult(of erasureId: String) async throws -> ErasureResult? {
        tracker.recorded(participant, erasureId)
    }

    func apply(_ command: EraseSubject) async throws -> ErasureResult {
        tracker.apply(participant, command)
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func run(
    bootstrap: String, namespace: String, count: Int, rate: Double, timeout: Double, executorPid: Int32,
    profileStorePid: Int32
) async throws {
    let topics = LetheTopics(namespace: namespace)
    let logger = makeLogger()
    let clock = ContinuousClock()
    let tracker = Tracker(count: count)
    let pids = [("erasure-executor", executorPid), ("profile-store", profileStorePid)]
    let participantNames = ["erasure-bench-a", "erasure-bench-b"]
    let expected = (["profile-store"] + participantNames).sorted()

    let admin = try KafkaAdmin(bootstrapServers: bootstrap, logger: logger)
    // The executor created its topics before it became ready; the bench participants' topics are the executor's too.
    let partitions = try await admin.partitionCount(of: topics.erasureCompleted)
    let statusProducer = try KafkaProducer(
        config: KafkaProducerConfig(bootstrapServers: bootstrap, clientId: "erasure-bench-status"), logger: logger)
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: statusProducer)]
    var participants: [ServiceGroupConfiguration.ServiceConfiguration] = []
    for name in participantNames {
        // Each lightweight participant is what a small service would be: its own producer and consumer group.
        let producer = try KafkaProducer(
            config: KafkaProducerConfig(bootstrapServers: bootstrap, clientId: name), logger: logger)
        let participant = try ErasureParticipant(
            config: ErasureParticipantConfig(
                participant: name, holds: ["name", "email"], groupId: "\(namespace).lethe.erasure.\(name)",
                commandsTopic: topics.erasureCommands, acksTopic: topics.erasureAcks, participantsTopic: topics.erasureParticipants,
                sessionTimeout: .seconds(6)),
            handler: BenchHandler(participant: name, tracker: tracker), producer: producer,
            bootstrapServers: bootstrap, logger: logger)
        services.append(.init(service: producer))
        participants.append(.init(service: participant))
    }
    let completions = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap,
            subscription: .partitions((0..<partitions).map {
                (TopicPartition(topic: topics.erasureCompleted, partition: Int32($0)), offset: KafkaConsumer.beginning)
            }),
            clientId: "erasure-bench-completed"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: services + participants + [.init(service: completions)], logger: logger))

    func status(_ account: String, tenant: String, app: String) throws -> OutgoingMessage {
        let event = AccountStatusReported(
            appId: app, accountId: account, tenantIds: [tenant], status: .closed, reportedAt: Date())
        return try OutgoingMessage(
            event: event, topic: topics.pdrStatus, key: "\(app):\(account)", source: "lethe/erasure-bench")
    }
    var messages: [OutgoingMessage] = []
    messages.reserveCapacity(count)
    for index in 0..<count {
        messages.append(try status(accountId(index), tenant: tenantId(index), app: appId(index)))
    }

    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        tasks.addTask {
            for try await message in completions.messages {
                let now = clock.now
                guard let event = try? message.decodeEvent(ErasureCompleted.self) else { continue }
                tracker.completed(event, at: now)
            }
        }

        // Warm-up: the pipeline is up once an erasure completes with all three participants (executor intake group
        // joined, participants declared, restored by the executor, and their groups joined).
        let warmupStart = clock.now
        let warmupDeadline = warmupStart + .seconds(120)
        var dog = watchdog(pids: pids, deadline: warmupDeadline) {
            "no warm-up erasure completed with all of \(expected) within 120 s"
        }
        var round = 0
        warmup: while true {
            let account = warmupAccount(round)
            _ = try await statusProducer.send(try status(account, tenant: "tenant-0", app: "app-0"))
            let roundDeadline = clock.now + .seconds(15)
            while clock.now < roundDeadline {
                if let got = tracker.warmup(account) {
                    if got == expected { break warmup }
                    note("warm-up \(round) completed with \(got), not yet \(expected); again")
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            round += 1
        }
        dog.cancel()
        note("pipeline up: warm-up erasure completed with \(expected) after \(clock.now - warmupStart)")

        // The measured run: `count` statuses at `rate`/s, each handed to the producer when it is due.
        dog = watchdog(pids: pids, deadline: clock.now + .seconds(timeout)) {
            // What completed so far, so a run that misses the timeout still says how far off it is.
            let state = tracker.state.withLock { $0 }
            let done = (0..<count).compactMap { index in
                state.completed[index].flatMap { end in state.published[index].map { milliseconds(end - $0) } }
            }.sorted()
            let those = done.isEmpty ? "" : String(
                format: " (p50 %.0f ms, p99 %.0f ms of those)", percentile(done, 50), percentile(done, 99))
            return String(
                format: "only %d of %d erasures completed within %.0f s of the first status", done.count, count, timeout)
                + those
        }
        let cpuStart = (
            ProcessStats.cpuSeconds(pid: executorPid), ProcessStats.cpuSeconds(pid: profileStorePid),
            ProcessStats.cpuSeconds(pid: getpid()))
        let sendStart = clock.now
        var sent = 0
        try await withThrowingTaskGroup(of: Void.self) { sends in
            while sent < count {
                let elapsed = Double((clock.now - sendStart).components.seconds)
                    + Double((clock.now - sendStart).components.attoseconds) / 1e18
                let due = min(count, Int(elapsed * rate) + 1)
                if due > sent {
                    let range = sent..<due
                    tracker.published(range, at: clock.now, wall: Date())
                    let batch = Array(messages[range])
                    sends.addTask { try await statusProducer.send(batch) }
                    sent = due
                }
                try await Task.sleep(for: .milliseconds(2))
            }
            try await sends.waitForAll()
        }
        let sendEnd = clock.now
        note(String(format: "published %d closed statuses in %.2f s (%.0f/s, all acknowledged by the broker)",
                    count, milliseconds(sendEnd - sendStart) / 1000, Double(count) / (milliseconds(sendEnd - sendStart) / 1000)))
        var lastReport = clock.now
        while tracker.completedCount < count {
            try await Task.sleep(for: .milliseconds(20))
            if clock.now - lastReport > .seconds(5) {
                lastReport = clock.now
                note("\(tracker.completedCount) of \(count) completed after \(clock.now - sendStart)")
            }
        }
        dog.cancel()
        let state = tracker.state.withLock { $0 }
        var latencies: [Double] = []
        latencies.reserveCapacity(count)
        for index in 0..<count {
            latencies.append(milliseconds(state.completed[index]! - state.published[index]!))
        }
        // Stages, on the machine's wall clock (every process here reads the same one; ErasureCompleted carries ms):
        // published → first bench participant saw the command → last ack (acked `at`) → executor completedAt.
        var toCommand: [Double] = [], toLastAck: [Double] = [], ackToComplete: [Double] = []
        var profileStoreAck: [Double] = []
        for index in 0..<count {
            guard let published = state.publishedWall[index], let event = state.completedEvents[index] else { continue }
            if let seen = state.commandSeenWall[index] {
                toCommand.append(seen.timeIntervalSince(published) * 1000)
            }
            if let last = event.outcomes.map(\.at).max() {
                toLastAck.append(last.timeIntervalSince(published) * 1000)
                ackToComplete.append(event.completedAt.timeIntervalSince(last) * 1000)
            }
            if let ps = event.outcomes.first(where: { $0.participant == "profile-store" }) {
                profileStoreAck.append(ps.at.timeIntervalSince(published) * 1000)
            }
        }
        let firstPublished = state.published.compactMap { $0 }.min()!
        let lastCompleted = state.completed.compactMap { $0 }.max()!
        let span = milliseconds(lastCompleted - firstPublished) / 1000
        let sorted = latencies.sorted()
        func line(_ name: String, _ values: [Double]) -> String {
            let s = values.sorted()
            return String(format: "  %@: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms (n %d)",
                          name, percentile(s, 50), percentile(s, 90), percentile(s, 99), s.last ?? .nan, s.count)
        }
        var outcomes: [String: Int] = [:]
        for event in state.completedEvents.compactMap({ $0 }) {
            for outcome in event.outcomes { outcomes["\(outcome.participant)=\(outcome.outcome.rawValue)", default: 0] += 1 }
        }
        print("stages (wall clock, from the status's publish):")
        print(line("command reached a bench participant", toCommand))
        print(line("profile-store acked", profileStoreAck))
        print(line("last participant acked", toLastAck))
        print(line("last ack → executor completedAt", ackToComplete))
        print(line("closed → ErasureCompleted read (monotonic)", latencies))
        print("outcomes: " + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("commands received by the bench participants: \(state.commandsReceived) (\(2 * (count + round + 1)) without re-sends); duplicate completions \(state.duplicates), unknown \(state.unknown)")
        let cpu = (
            executor: ProcessStats.cpuSeconds(pid: executorPid) - cpuStart.0,
            profileStore: ProcessStats.cpuSeconds(pid: profileStorePid) - cpuStart.1,
            bench: ProcessStats.cpuSeconds(pid: getpid()) - cpuStart.2)
        // Per erasure: what each process spent on one (the bench process holds the two other participants).
        let perErasure = (executor: cpu.executor * 1000 / Double(count), profileStore: cpu.profileStore * 1000 / Double(count),
                          bench: cpu.bench * 1000 / Double(count))
        print(String(format: "CPU during the run: erasure-executor %.1f s, profile-store %.1f s, erasure-bench %.1f s; "
                     + "per erasure %.2f ms, %.2f ms, %.2f ms", cpu.executor, cpu.profileStore, cpu.bench,
                     perErasure.executor, perErasure.profileStore, perErasure.bench))
        print(String(format: "peak RSS: erasure-executor %.0f MiB, profile-store %.0f MiB, erasure-bench %.0f MiB",
                     Double(ProcessStats.peakRSSKiB(pid: executorPid)) / 1024,
                     Double(ProcessStats.peakRSSKiB(pid: profileStorePid)) / 1024,
                     Double(ProcessStats.peakRSSKiB(pid: getpid())) / 1024))
        print(String(format: "completed at %.0f erasures/s (first status published → last ErasureCompleted)",
                     Double(count) / span))
        print(String(format: "erasure: %d completed, p50 %.0f ms, p99 %.0f ms at %.0f/s, %.2f ms CPU per erasure (executor)",
                     state.completedCount, percentile(sorted, 50), percentile(sorted, 99), rate, perErasure.executor))
        await group.triggerGracefulShutdown()
        tasks.cancelAll()
    }
}

// MARK: probe

/// The per-record costs an ErasureKit participant and the executor's intake pay on this broker: an awaited single
/// send (with the default 5 ms linger, and with none) and a synchronous offset commit per record.
func probe(bootstrap: String, namespace: String, count: Int) async throws {
    let logger = makeLogger()
    let clock = ContinuousClock()
    let topic = "\(namespace).probe"
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
        TopicSpec(name: topic, partitions: 1),
    ])
    for linger in [5, 0] {
        let producer = try KafkaProducer(
            config: KafkaProducerConfig(bootstrapServers: bootstrap, linger: .milliseconds(linger)), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            _ = try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("warm".utf8)))
            let start = clock.now
            for index in 0..<count {
                _ = try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array("\(index)".utf8)))
            }
            let each = milliseconds(clock.now - start) / Double(count)
            let batchStart = clock.now
            try await producer.send((0..<count).map {
                OutgoingMessage(topic: topic, key: "k", value: Array("b\($0)".utf8))
            })
            print(String(format: "probe: awaited single send, linger %d ms: %.2f ms each (%.0f/s); %d in one send: %.1f ms",
                         linger, each, 1000 / each, count, milliseconds(clock.now - batchStart)))
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap, subscription: .group(id: "\(namespace).probe", topics: [topic]),
            sessionTimeout: .seconds(6)),
        logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: consumer)], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var committed = 0
        var total = Duration.zero
        for try await message in consumer.messages {
            let start = clock.now
            try await consumer.commit(message)
            total += clock.now - start
            committed += 1
            if committed == count { break }
        }
        print(String(format: "probe: synchronous commit per record: %.2f ms each", milliseconds(total) / Double(count)))
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
