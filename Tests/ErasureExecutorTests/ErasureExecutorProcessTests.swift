import AsyncHTTPClient
import Contracts
import ErasureKit
import Foundation
import Messaging
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

@testable import erasure_executor

/// A participant that fails (its handler throws, so ErasureKit acks `failed`) until told to work, then applies
/// commands like any participant. It notes every erasure id it is handed, so a test learns the id from the command.
actor FlakyParticipantHandler: ErasureHandler {
    struct Broken: Error {}

    private var failing: Bool
    private var recorded: [String: ErasureResult] = [:]
    private(set) var seen: [String] = []

    init(failing: Bool) { self.failing = failing }

    func setFailing(_ value: Bool) { failing = value }

    func recordedResult(of erasureId: String) -> ErasureResult? { recorded[erasureId] }

    func apply(_ command: EraseSubject) throws -> ErasureResult {
        seen.append(command.erasureId)
        if failing { throw Broken() }
        let result = ErasureResult(outcome: .erased)
        recorded[command.erasureId] = result
        return result
    }
}

/// The erasure-executor binary as a child process with its HTTP port, and the test's Kafka topics around it.
struct ExecutorProcess {
    let process: ChildProcess
    /// Held until ``stop()``, so no parallel test picks the port while the executor starts (it listens beside it).
    let reservation: SandboxProcess.ReservedPort
    var port: Int { reservation.port }
    let log: URL
    static let adminToken = "admin-token-0123456789"

    struct NotReady: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts the built executable with `settings` on top of the test defaults and waits until `waitFor` answers 200
    /// (`/health/live` for a replica expected to be a standby, which is never ready).
    static func start(
        kafka: KafkaFixture, namespace: String, directory: TemporaryDirectory, settings: [String: String],
        waitFor: String = "/health/ready"
    ) async throws -> ExecutorProcess {
        let binary = RepositoryPaths.executable("erasure-executor")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "missing \(binary.path)")
        let reservation = try SandboxProcess.ReservedPort()
        let port = reservation.port
        var environment = [
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrapServers, "LETHE_DATA_DIR": directory.url.path,
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(port), "LETHE_TOPIC_NAMESPACE": namespace,
            "KAFKA_TOPIC_PARTITIONS": "3", "LETHE_AUDIT_KEY": testAuditKey, "LETHE_ADMIN_TOKEN": adminToken,
            "ERASURE_SWEEP_MILLISECONDS": "100", "ERASURE_STATE_RESTORE_SECONDS": "20", "LOG_LEVEL": "warning",
        ]
        environment.merge(settings) { $1 }
        let log = directory.url.appendingPathComponent("erasure-executor.log")
        let process = try reservation.spawn(binary.path, environment: environment, stdoutPath: log.path)
        let executor = ExecutorProcess(process: process, reservation: reservation, log: log)
        let ready = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            (try? await executor.get(waitFor, token: nil).status) == 200
        }
        if !ready {
            await executor.stop()
            throw NotReady(description: "erasure-executor was not ready: \(executor.output())")
        }
        return executor
    }

    func output() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    func stop() async {
        await process.stop()
        reservation.release()
    }

    func call(_ method: HTTPMethod, _ path: String, token: String?) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    func get(_ path: String, token: String? = adminToken) async throws -> (status: Int, body: String) {
        try await call(.GET, path, token: token)
    }

    /// `GET /v1/erasures/{id}` as the operator; nil unless 200.
    func erasure(_ id: String) async throws -> ErasureRecord? {
        let (status, body) = try await get("/v1/erasures/\(id)")
        guard status == 200 else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(ErasureRecord.self, from: Data(body.utf8))
    }

    /// The value of one sample of `GET /metrics` (`name` with its labels, exactly as printed), or nil when absent.
    func metric(_ sample: String) async throws -> Double? {
        let (_, body) = try await get("/metrics", token: nil)
        for line in body.split(separator: "\n") where line.hasPrefix(sample + " ") {
            return Double(line.dropFirst(sample.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

@Suite("erasure-executor as a process, over Kafka and HTTP, with ErasureKit participants in-process")
struct ErasureExecutorProcessTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasure-executor-process") }

    /// Creates the topics the test and its participants use before anything subscribes, with the executor's
    /// partition count (it refuses existing topics with another).
    func makeTopics(_ topics: LetheTopics) async throws {
        func spec(_ name: String, like architectureName: String) -> TopicSpec {
            TopicSpec(name: name, partitions: 3, config: Topics.definition(named: architectureName)!.kafkaConfig)
        }
        try await KafkaAdmin(bootstrapServers: kafka.bootstrapServers, logger: kafka.logger).ensureTopics([
            spec(topics.tenants, like: Topics.tenants), spec(topics.pdrStatus, like: Topics.pdrStatus),
            spec(topics.erasureCommands, like: Topics.erasureCommands),
            spec(topics.erasureAcks, like: Topics.erasureAcks),
            spec(topics.erasureParticipants, like: Topics.erasureParticipants),
        ])
    }

    func participant(
        _ name: String, handler: any ErasureHandler, namespace: String, topics: LetheTopics
    ) throws -> RunningGroup {
        let producer = try kafka.makeProducer()
        let participant = try ErasureParticipant(
            config: ErasureParticipantConfig(
                participant: name, holds: ["email"], groupId: "\(namespace).erasure.\(name)",
                commandsTopic: topics.erasureCommands, acksTopic: topics.erasureAcks,
                participantsTopic: topics.erasureParticipants, sessionTimeout: .seconds(6)),
            handler: handler, producer: producer, bootstrapServers: kafka.bootstrapServers, logger: kafka.logger)
        return RunningGroup([producer, participant], logger: kafka.logger)
    }

    func closedStatus(_ accountId: String, tenant: String) -> AccountStatusReported {
        AccountStatusReported(
            appId: "app-1", accountId: accountId, tenantIds: [tenant], status: .closed, reportedAt: Date())
    }

    @Test("""
        a participant that acks failed until the limit leaves the erasure needing attention; after it is fixed, \
        POST /v1/erasures/{id}/retry over HTTP re-sends and the erasure completes, audited
        """)
    func failedUntilAttentionThenRetryOverHTTP() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee-retry")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        let accountId = "557058:retry-\(UUID().uuidString.prefix(6))"
        let steadyHandler = TestParticipantHandler(held: ["tenant-r/\(accountId)": .init(name: "n", email: "e")])
        let flakyHandler = FlakyParticipantHandler(failing: true)
        var running: [RunningGroup] = []
        var executor: ExecutorProcess?
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            try await send(tenant("tenant-r", .delete), topic: topics.tenants, key: "tenant-r")
            // Declared before the executor starts, so its start-up restore knows both and the erasure waits for both.
            for name in ["flaky", "steady"] {
                try await send(declared(name), topic: topics.erasureParticipants, key: name)
            }
            running.append(try participant("steady", handler: steadyHandler, namespace: namespace, topics: topics))
            running.append(try participant("flaky", handler: flakyHandler, namespace: namespace, topics: topics))
            let started = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: directory,
                settings: ["ERASURE_RESEND_SECONDS": "1", "ERASURE_MAX_FAILED_ATTEMPTS": "2"])
            executor = started

            try await send(
                closedStatus(accountId, tenant: "tenant-r"), topic: topics.pdrStatus, key: "app-1:\(accountId)")

            // The flaky participant is handed the command, fails, is re-sent to once (backoff 1 s), fails again:
            // that is the limit, so the erasure needs attention.
            let attention = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
                guard let id = await flakyHandler.seen.first, let record = try? await started.erasure(id) else {
                    return false
                }
                return record.status == .needsAttention
            }
            let erasureId = try #require(await flakyHandler.seen.first, "no command reached the flaky participant")
            try #require(attention, "the erasure never needed attention: \(started.output())")
            // The steady participant's ack races the flaky one's two failures (its consumer may join its group
            // later): wait for it rather than assume it came first. The erasure stays in need of attention meanwhile.
            let steadyAcked = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await started.erasure(erasureId))?.participants.first { $0.participant == "steady" }?.outcome
                    == .erased
            }
            #expect(steadyAcked, "the steady participant's erased ack was never recorded")
            let stuck = try #require(try await started.erasure(erasureId))
            #expect(stuck.status == .needsAttention)
            let flakyState = stuck.participants.first { $0.participant == "flaky" }
            #expect(flakyState?.outcome == .failed && flakyState?.failedAttempts == 2)
            #expect(flakyState?.detail?.contains("participant error") == true)
            #expect(stuck.participants.first { $0.participant == "steady" }?.outcome == .erased)
            #expect(stuck.accountId == accountId, "an open erasure keeps its accountId")

            // Fixed; the operator asks for a retry over HTTP.
            await flakyHandler.setFailing(false)
            let sendsBefore = flakyState?.sends ?? 0
            let (retryStatus, retryBody) = try await started.call(
                .POST, "/v1/erasures/\(erasureId)/retry", token: ExecutorProcess.adminToken)
            #expect(retryStatus == 200, "\(retryBody)")
            let completed = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
                (try? await started.erasure(erasureId))?.status == .completed
            }
            #expect(completed, "the retried erasure did not complete: \(started.output())")
            let done = try #require(try await started.erasure(erasureId))
            #expect(done.participants.map(\.outcome) == [.erased, .erased])
            #expect((done.participants.first { $0.participant == "flaky" }?.sends ?? 0) > sendsBefore)
            #expect(done.accountId == nil, "a completed erasure forgets the accountId")
            #expect(await steadyHandler.applied.count == 1, "the steady participant applied the erasure once")
            let (verifyStatus, verifyBody) = try await started.get("/v1/audit/verify")
            #expect(verifyStatus == 200 && verifyBody.contains(#""ok":true"#), "\(verifyBody)")
            // A second retry of a completed erasure is refused.
            #expect(try await started.call(
                .POST, "/v1/erasures/\(erasureId)/retry", token: ExecutorProcess.adminToken).status == 409)
        } catch {
            Issue.record(error)
        }
        await executor?.stop()
        for group in running { await group.stop() }
        await producing.stop()
    }

    @Test("""
        with a one-second deadline and a participant down, the erasure is overdue in the HTTP API and the gauges; when \
        the participant comes back it completes, stays marked as late, and the gauges and ack latency follow
        """)
    func overdueWhileAParticipantIsDownThenCompletes() async throws {
        let directory = try TemporaryDirectory()
        let namespace = uniqueName("ee-overdue")
        let topics = LetheTopics(namespace: namespace)
        try await makeTopics(topics)
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        let accountId = "557058:late-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["tenant-o/\(accountId)": .init(name: "n", email: "e")]
        let presentHandler = TestParticipantHandler(held: held)
        let absentHandler = TestParticipantHandler(held: held)
        var running: [RunningGroup] = []
        var executor: ExecutorProcess?
        do {
            func send(_ event: some LetheEvent, topic: String, key: String) async throws {
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: key, source: "test"))
            }
            // One deadline day, and one day lasts one second here (ERASURE_DAY_SECONDS).
            try await send(tenant("tenant-o", .scrub, days: 1), topic: topics.tenants, key: "tenant-o")
            for name in ["absent", "present"] {
                try await send(declared(name), topic: topics.erasureParticipants, key: name)
            }
            running.append(try participant("present", handler: presentHandler, namespace: namespace, topics: topics))
            // Re-sends every 3600 s: the erasure waits for "absent" without the test depending on re-send timing.
            let started = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: directory,
                settings: ["ERASURE_DAY_SECONDS": "1", "ERASURE_RESEND_SECONDS": "3600"])
            executor = started

            try await send(
                closedStatus(accountId, tenant: "tenant-o"), topic: topics.pdrStatus, key: "app-1:\(accountId)")

            let overdue = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
                guard let id = await presentHandler.applied.first?.erasureId,
                      let record = try? await started.erasure(id)
                else { return false }
                let gauge = try? await started.metric("lethe_erasures_overdue")
                // The present participant's ack may land after the one-second deadline on a busy machine.
                let presentAcked = record.participants.first { $0.participant == "present" }?.outcome == .scrubbed
                return record.overdue && gauge == 1 && presentAcked
            }
            let erasureId = try #require(
                await presentHandler.applied.first?.erasureId, "no command reached the running participant")
            try #require(overdue, "the erasure never became overdue: \(started.output())")
            let late = try #require(try await started.erasure(erasureId))
            #expect(late.status == .dispatched && late.deadline < Date())
            #expect(late.participants.first { $0.participant == "present" }?.outcome == .scrubbed)
            #expect(late.participants.first { $0.participant == "absent" }?.outcome == nil)
            #expect(try await started.metric("lethe_erasures_open") == 1)
            #expect(try await started.metric(#"lethe_erasures{status="dispatched"}"#) == 1)

            running.append(try participant("absent", handler: absentHandler, namespace: namespace, topics: topics))
            // Nothing is re-sent for an hour: the returning participant's group starts at the beginning of the
            // commands topic and finds the command there.
            let completed = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
                (try? await started.erasure(erasureId))?.status == .completed
            }
            #expect(completed, "the erasure did not complete after the participant came back: \(started.output())")
            let done = try #require(try await started.erasure(erasureId))
            #expect(done.overdue, "a completed erasure still shows it was late")
            #expect(done.participants.map(\.outcome) == [.scrubbed, .scrubbed])
            let gauges = await eventually(timeout: .seconds(10), every: .milliseconds(200)) {
                let overdue = try? await started.metric("lethe_erasures_overdue")
                let open = try? await started.metric("lethe_erasures_open")
                let completed = try? await started.metric(#"lethe_erasures{status="completed"}"#)
                return overdue == 0 && open == 0 && completed == 1
            }
            #expect(gauges, "the gauges did not follow the completion")
            let ackLatencies = try await started.metric("lethe_erasure_ack_latency_seconds_count")
            #expect((ackLatencies ?? 0) >= 2, "ack latency is not measured")
            #expect(try await started.metric("lethe_erasures_completed_total") == 1)
        } catch {
            Issue.record(error)
        }
        await executor?.stop()
        for group in running { await group.stop() }
        await producing.stop()
    }
}
