import Foundation
import Logging
import Messaging
import ServiceLifecycle
import Synchronization
import Testing
import TestSupport

@Suite("The consumer pipeline every service uses, against the dev broker")
struct ConsumerPipelineTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("pipeline") }

    struct Permanent: Error, CustomStringConvertible { var description: String { "the handler refuses it for good" } }
    struct Flaky: Error {}

    /// What the handler saw, and how often the flaky record failed before it went through.
    final class Journal: Sendable {
        let handled = Mutex<Set<String>>([])
        let flakyFailures = Mutex(0)
    }

    /// The pipeline as a service, the way every consumer runs it.
    struct PipelineService: Service {
        let pipeline: ConsumerPipeline<String>
        let journal: Journal

        func run() async throws {
            try await pipeline.run { batch in
                var refusals: [Refusal] = []
                for record in batch {
                    switch record.item {
                    case "culprit":
                        throw Permanent()
                    case "flaky":
                        let failed = journal.flakyFailures.withLock { count in
                            count += 1
                            return count <= 2
                        }
                        if failed { throw Flaky() }
                    case "refused":
                        refusals.append(Refusal(record.message, reason: "refused by the handler"))
                        continue
                    default:
                        break
                    }
                }
                // Durable only once the whole batch went through, like a transaction.
                journal.handled.withLock { $0.formUnion(batch.map(\.item).filter { $0 != "refused" }) }
                return refusals
            }
        }
    }

    func pipeline(topic: String, group: String, producer: KafkaProducer) throws -> ConsumerPipeline<String> {
        ConsumerPipeline(
            consumer: try kafka.makeConsumer(group: group, topics: [topic]), producer: producer, logger: kafka.logger,
            work: "pipeline test", retry: RetryPolicy(isTransient: { $0 is Flaky }), maxBatch: 50
        ) { message in
            let text = String(decoding: message.value ?? [], as: UTF8.self)
            guard text != "poison" else { throw Permanent() }
            return text == "skip" ? nil : text
        }
    }

    @Test("""
        undecodable records and refusals go to the DLQ with their reason; a batch that fails for good is handled one \
        record at a time, so only its culprit is dead-lettered; transient failures are retried; every offset is committed
        """)
    func deadLettersRetriesAndCommits() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
            .ensureTopics([TopicSpec(name: DeadLetterQueue.topic(for: topic), partitions: 1)])
        let group = uniqueName("g")
        let producer = try kafka.makeProducer()
        let journal = Journal()
        let values = ["skip", "poison", "a", "b", "culprit", "c", "flaky", "refused", "d"]
        try await withRunningServices(
            [producer, PipelineService(pipeline: try pipeline(topic: topic, group: group, producer: producer), journal: journal)],
            logger: kafka.logger
        ) {
            try await producer.send(values.map { OutgoingMessage(topic: topic, key: "k", value: Array($0.utf8)) })
            let done = await eventually(timeout: .seconds(60)) {
                journal.handled.withLock { $0 } == ["a", "b", "c", "flaky", "d"]
            }
            #expect(done, "handled: \(journal.handled.withLock { $0 })")
            #expect(journal.flakyFailures.withLock { $0 } == 3, "two failures, then the attempt that went through")
        }
        let dead = try await readUntil(kafka, topic: DeadLetterQueue.topic(for: topic)) { $0.count >= 3 }
        let reasons = Dictionary(uniqueKeysWithValues: dead.map {
            (String(decoding: $0.value ?? [], as: UTF8.self), $0.header(DeadLetterQueue.errorHeader)?.stringValue ?? "")
        })
        #expect(reasons == [
            "poison": "the handler refuses it for good", "culprit": "the handler refuses it for good",
            "refused": "refused by the handler",
        ])

        // Everything was committed: the group's next member starts after the last record.
        let later = Journal()
        let nextProducer = try kafka.makeProducer()  // a producer that ran and stopped is closed for good
        try await withRunningServices(
            [nextProducer, PipelineService(pipeline: try pipeline(topic: topic, group: group, producer: nextProducer), journal: later)],
            logger: kafka.logger
        ) {
            try await nextProducer.send(OutgoingMessage(topic: topic, key: "k", value: Array("e".utf8)))
            #expect(await eventually(timeout: .seconds(60)) { later.handled.withLock { $0 } == ["e"] })
            try await Task.sleep(for: .milliseconds(300))
            #expect(later.handled.withLock { $0 } == ["e"], "records committed before were handled again")
        }
    }

    /// A pipeline without commits that handles its group's changes, as pdr-reporter's intake runs it: every event it
    /// saw, in order.
    struct PartitionOwner: Service {
        let pipeline: ConsumerPipeline<String>
        let seen: Seen

        final class Seen: Sendable {
            let events = Mutex<[String]>([])
            func withLock<R: Sendable>(_ body: (inout [String]) -> R) -> R { events.withLock { body(&$0) } }
        }

        func run() async throws {
            try await pipeline.run(onGroupChange: { change in
                switch change {
                case .assigned(let partitions): seen.withLock { $0.append("assigned \(partitions.map(\.partition))") }
                case .revoked(let partitions): seen.withLock { $0.append("revoked \(partitions.map(\.partition))") }
                }
            }) { batch in
                seen.withLock { $0 += batch.map(\.item) }
                return []
            }
        }
    }

    @Test("""
        without commits and with a group-change handler: the assignment comes before the partition's records, leaving \
        the group at graceful shutdown hands the revocation after the last batch, and the next member starts from the \
        beginning again
        """)
    func groupChangesWithoutCommits() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let group = uniqueName("g")
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            try await producer.send(["a", "b"].map { OutgoingMessage(topic: topic, key: "k", value: Array($0.utf8)) })
        }
        for run in 1...2 {
            let owner = PartitionOwner(
                pipeline: ConsumerPipeline(
                    consumer: try kafka.makeConsumer(group: group, topics: [topic]), producer: try kafka.makeProducer(),
                    logger: kafka.logger, work: "pipeline test", retry: .kafka, maxBatch: 50, commits: false
                ) { String(decoding: $0.value ?? [], as: UTF8.self) },
                seen: PartitionOwner.Seen())
            try await withRunningServices([owner], logger: kafka.logger) {
                let read = await eventually(timeout: .seconds(60)) { owner.seen.withLock { $0.count } >= 3 }
                #expect(read, "run \(run) saw \(owner.seen.withLock { $0 })")
            }
            #expect(owner.seen.withLock { $0 } == ["assigned [0]", "a", "b", "revoked [0]"], "run \(run)")
        }
    }

    /// A pipeline whose commits wait for `beforeCommit`, as profile-store's and the executor's wait for their outbox:
    /// every event in order, and whether the wait lets a commit through.
    struct WaitingCommitter: Service {
        let pipeline: ConsumerPipeline<String>
        let seen: PartitionOwner.Seen

        init(_ fixture: KafkaFixture, topic: String, group: String, seen: PartitionOwner.Seen, settles: Bool) throws {
            self.seen = seen
            self.pipeline = ConsumerPipeline(
                consumer: try fixture.makeConsumer(group: group, topics: [topic]), producer: try fixture.makeProducer(),
                logger: fixture.logger, work: "pipeline test", retry: .kafka, maxBatch: 50,
                beforeCommit: {
                    seen.withLock { $0.append("settling") }
                    try await Task.sleep(for: .seconds(3))
                    guard settles else { throw NotOnTheBroker() }
                    seen.withLock { $0.append("settled") }
                }
            ) { String(decoding: $0.value ?? [], as: UTF8.self) }
        }

        struct NotOnTheBroker: Error {}

        func run() async throws {
            try await pipeline.run { batch in
                seen.withLock { $0 += batch.map(\.item) }
                return []
            }
        }
    }

    @Test("""
        with a wait before each commit: the next batch is handled while the previous one waits; a batch whose wait \
        fails is not committed and comes again to the group's next member; once the wait succeeds it is committed
        """)
    func commitsWaitForBeforeCommit() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let group = uniqueName("g")
        let producer = try kafka.makeProducer()
        func send(_ value: String) async throws {
            try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array(value.utf8)))
        }
        try await withRunningServices([producer], logger: kafka.logger) {
            // The first member's waits never succeed: "a" and "b" are handled, neither is committed.
            let first = PartitionOwner.Seen()
            try await withRunningServices(
                [try WaitingCommitter(kafka, topic: topic, group: group, seen: first, settles: false)],
                logger: kafka.logger
            ) {
                try await send("a")
                #expect(await eventually(timeout: .seconds(60)) { first.withLock { $0.contains("a") } })
                try await send("b")
                // "b" arrives and is handled while "a" still waits (3 s).
                #expect(await eventually(timeout: .seconds(30)) { first.withLock { $0.contains("b") } })
                #expect(first.withLock { $0 }.starts(with: ["a", "settling", "b"]), "\(first.withLock { $0 })")
            }

            // The next member gets both again; its waits succeed, so it commits them.
            let second = PartitionOwner.Seen()
            try await withRunningServices(
                [try WaitingCommitter(kafka, topic: topic, group: group, seen: second, settles: true)],
                logger: kafka.logger
            ) {
                let again = await eventually(timeout: .seconds(60)) {
                    second.withLock { $0.filter { $0.count == 1 } } == ["a", "b"]
                }
                #expect(again, "records whose wait failed were not handled again: \(second.withLock { $0 })")
            }
            // Shutting down waited for the pending commit.
            #expect(second.withLock { $0 }.last == "settled", "\(second.withLock { $0 })")

            let third = PartitionOwner.Seen()
            try await withRunningServices(
                [try WaitingCommitter(kafka, topic: topic, group: group, seen: third, settles: true)],
                logger: kafka.logger
            ) {
                try await send("c")
                #expect(await eventually(timeout: .seconds(60)) { third.withLock { $0.contains("c") } })
            }
            #expect(third.withLock { $0.filter { $0.count == 1 } } == ["c"], "committed records came again")
        }
    }

    @Test("""
        cancelled while a batch's commit waits and the next batch waits for it, the pipeline returns: the cancellation \
        reaches the waiting commit (a replica that lost its lease must stop, not wait for ever for an outbox)
        """)
    func cancelledWhileACommitWaits() async throws {
        let topic = try await kafka.makeTopic(partitions: 1)
        let producer = try kafka.makeProducer()
        try await withRunningServices([producer], logger: kafka.logger) {
            func send(_ value: String) async throws {
                try await producer.send(OutgoingMessage(topic: topic, key: "k", value: Array(value.utf8)))
            }
            let seen = PartitionOwner.Seen()
            let ended = Mutex(false)
            let pipeline = ConsumerPipeline(
                consumer: try kafka.makeConsumer(group: uniqueName("g"), topics: [topic]), producer: producer,
                logger: kafka.logger, work: "pipeline test", retry: .kafka, maxBatch: 50,
                beforeCommit: { try await Task.sleep(for: .seconds(3600)) }  // a broker that never takes the records
            ) { String(decoding: $0.value ?? [], as: UTF8.self) }
            let running = Task {
                defer { ended.withLock { $0 = true } }
                try? await pipeline.run { batch in
                    seen.withLock { $0 += batch.map(\.item) }
                    return []
                }
            }
            try await send("a")
            #expect(await eventually(timeout: .seconds(60)) { seen.withLock { $0.contains("a") } })
            // "b" is handled, then its batch waits for "a"'s commit, which waits for ever.
            try await send("b")
            #expect(await eventually(timeout: .seconds(30)) { seen.withLock { $0.contains("b") } })
            try await Task.sleep(for: .milliseconds(200))
            running.cancel()
            let stopped = await eventually(timeout: .seconds(20)) { ended.withLock { $0 } }
            #expect(stopped, "the cancelled pipeline still waits for its pending commit")
        }
    }
}
