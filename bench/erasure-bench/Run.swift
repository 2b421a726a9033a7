import Contracts
import BenchSupport
import ErasureKit
import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Synchronization

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

/// `erasure-bench run` (usage at the top of main.swift): the measured run, from warm-up to the printed result.
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
    let (statusProducer, completions, group) = try await benchServices(
        bootstrap: bootstrap, namespace: namespace, topics: topics, participantNames: participantNames,
        tracker: tracker, logger: logger)
    var messages: [OutgoingMessage] = []
    messages.reserveCapacity(count)
    for index in 0..<count {
        messages.append(try closedStatus(accountId(index), tenant: tenantId(index), app: appId(index), topics: topics))
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
        let warmupRounds = try await warmUp(
            statusProducer, tracker: tracker, topics: topics, expected: expected, pids: pids)

        // The measured run: `count` statuses at `rate`/s, each handed to the producer when it is due.
        let dog = watchdog(pids: pids, deadline: clock.now + .seconds(timeout)) {
            shortfall(tracker, count: count, timeout: timeout)
        }
        let cpuStart = (
            ProcessStats.cpuSeconds(pid: executorPid), ProcessStats.cpuSeconds(pid: profileStorePid),
            ProcessStats.cpuSeconds(pid: getpid()))
        let machineStart = ProcessStats.machineJiffies()
        let sendStart = clock.now
        try await publish(messages, rate: rate, startingAt: sendStart, with: statusProducer, tracker: tracker)
        let sendEnd = clock.now
        note(String(format: "published %d closed statuses in %.2f s (%.0f/s, all acknowledged by the broker)",
                    count, milliseconds(sendEnd - sendStart) / 1000, Double(count) / (milliseconds(sendEnd - sendStart) / 1000)))
        try await waitForCompletions(tracker, count: count, since: sendStart)
        dog.cancel()
        report(
            tracker.state.withLock { $0 }, count: count, rate: rate, warmupRounds: warmupRounds, cpuStart: cpuStart,
            machineStart: machineStart, executorPid: executorPid, profileStorePid: profileStorePid)
        await group.triggerGracefulShutdown()
        tasks.cancelAll()
    }
}

/// What completed so far, so a run that misses the timeout still says how far off it is.
func shortfall(_ tracker: Tracker, count: Int, timeout: Double) -> String {
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

/// Waits until `count` bench erasures completed, saying every 5 s how many have.
func waitForCompletions(_ tracker: Tracker, count: Int, since sendStart: ContinuousClock.Instant) async throws {
    let clock = ContinuousClock()
    var lastReport = clock.now
    while tracker.completedCount < count {
        try await Task.sleep(for: .milliseconds(20))
        if clock.now - lastReport > .seconds(5) {
            lastReport = clock.now
            note("\(tracker.completedCount) of \(count) completed after \(clock.now - sendStart)")
        }
    }
}

/// The bench's Kafka clients, as one service group: the status producer, two in-process participants (each with its
/// own producer and consumer group, as a small service would have) and the reader of `ErasureCompleted`.
func benchServices(
    bootstrap: String, namespace: String, topics: LetheTopics, participantNames: [String], tracker: Tracker,
    logger: Logger
) async throws -> (statusProducer: KafkaProducer, completions: KafkaConsumer, group: ServiceGroup) {
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
                (TopicPartition(topic: topics.erasureCompleted, partition: Int32($0)), from: .beginning)
            }),
            clientId: "erasure-bench-completed"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: services + participants + [.init(service: completions)], logger: logger))
    return (statusProducer, completions, group)
}

/// The `closed` status of `account` that the bench publishes.
func closedStatus(_ account: String, tenant: String, app: String, topics: LetheTopics) throws -> OutgoingMessage {
    let event = AccountStatusReported(
        appId: app, accountId: account, tenantIds: [tenant], status: .closed, reportedAt: Date())
    return try OutgoingMessage(
        event: event, topic: topics.pdrStatus, key: "\(app):\(account)", source: "lethe/erasure-bench")
}

/// Warm-up: the pipeline is up once an erasure completes with all three participants (executor intake group
/// joined, participants declared, restored by the executor, and their groups joined). Returns how many warm-up
/// erasures it took.
func warmUp(
    _ statusProducer: KafkaProducer, tracker: Tracker, topics: LetheTopics, expected: [String], pids: [(String, Int32)]
) async throws -> Int {
    let clock = ContinuousClock()
    let warmupStart = clock.now
    let warmupDeadline = warmupStart + .seconds(120)
    let dog = watchdog(pids: pids, deadline: warmupDeadline) {
        "no warm-up erasure completed with all of \(expected) within 120 s"
    }
    var round = 0
    warmup: while true {
        let account = warmupAccount(round)
        _ = try await statusProducer.send(try closedStatus(account, tenant: "tenant-0", app: "app-0", topics: topics))
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
    return round + 1
}

/// Hands `messages` to the producer at `rate`/s from `start`, each when it is due, and waits until the broker
/// acknowledged them all.
func publish(
    _ messages: [OutgoingMessage], rate: Double, startingAt start: ContinuousClock.Instant,
    with statusProducer: KafkaProducer, tracker: Tracker
) async throws {
    let clock = ContinuousClock()
    let count = messages.count
    var sent = 0
    try await withThrowingTaskGroup(of: Void.self) { sends in
        while sent < count {
            let elapsed = Double((clock.now - start).components.seconds)
                + Double((clock.now - start).components.attoseconds) / 1e18
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
}
