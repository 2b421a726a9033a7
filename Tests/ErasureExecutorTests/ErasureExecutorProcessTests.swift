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

    func call(
        _ method: HTTPMethod, _ path: String, token: String?, headers: [String: String] = [:]
    ) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
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

    func closedStatus(_ accountId: String, tenant: String) -> AccountStatusReported {
        AccountStatusReported(
            appId: "app-1", accountId: accountId, tenantIds: [tenant], status: .closed, reportedAt: Date())
    }

    @Test("""
        a participant that acks failed until the limit leaves the erasure needing attention; after it is fixed, \
        POST /v1/erasures/{id}/retry over HTTP re-sends and the erasure completes, audited
        """)
    func failedUntilAttentionThenRetryOverHTTP() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-retry")
        let accountId = "557058:retry-\(UUID().uuidString.prefix(6))"
        let steadyHandler = TestParticipantHandler(held: ["tenant-r/\(accountId)": .init(name: "n", email: "e")])
        let flakyHandler = FlakyParticipantHandler(failing: true)
        do {
            let started = try await startWithAFlakyParticipant(world, steady: steadyHandler, flaky: flakyHandler)
            try await world.send(
                closedStatus(accountId, tenant: "tenant-r"), topic: world.topics.pdrStatus, key: "app-1:\(accountId)")
            let (erasureId, sendsBefore) = try await expectItNeedsAttention(
                started, flaky: flakyHandler, accountId: accountId)

            // Fixed; the operator asks for a retry over HTTP.
            await flakyHandler.setFailing(false)
            try await retryAndExpectTheCompletion(
                started, erasureId: erasureId, sendsBefore: sendsBefore, steady: steadyHandler)
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }

    @Test("""
        with a one-second deadline and a participant down, the erasure is overdue in the HTTP API and the gauges; when \
        the participant comes back it completes, stays marked as late, and the gauges and ack latency follow
        """)
    func overdueWhileAParticipantIsDownThenCompletes() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee-overdue")
        let accountId = "557058:late-\(UUID().uuidString.prefix(6))"
        let held: [String: TestParticipantHandler.Held] = ["tenant-o/\(accountId)": .init(name: "n", email: "e")]
        let presentHandler = TestParticipantHandler(held: held)
        let absentHandler = TestParticipantHandler(held: held)
        do {
            let started = try await startWithAParticipantDown(world, present: presentHandler)
            try await world.send(
                closedStatus(accountId, tenant: "tenant-o"), topic: world.topics.pdrStatus, key: "app-1:\(accountId)")
            let erasureId = try await expectItOverdue(started, present: presentHandler)

            try world.startParticipant("absent", handler: absentHandler, holds: ["email"])
            // Nothing is re-sent for an hour: the returning participant's group starts at the beginning of the
            // commands topic and finds the command there.
            try await expectTheLateCompletion(started, erasureId: erasureId)
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }
}

/// The phases of ``ErasureExecutorProcessTests/failedUntilAttentionThenRetryOverHTTP()``.
extension ErasureExecutorProcessTests {
    /// A tenant, two participants declared before the executor starts (so its start-up restore knows both and the
    /// erasure waits for both), both running, then the executor: two failed acks are its limit.
    private func startWithAFlakyParticipant(
        _ world: ExecutorWorld, steady: TestParticipantHandler, flaky: FlakyParticipantHandler
    ) async throws -> ExecutorProcess {
        try await world.send(tenant("tenant-r", .delete), topic: world.topics.tenants, key: "tenant-r")
        for name in ["flaky", "steady"] {
            try await world.send(declared(name), topic: world.topics.erasureParticipants, key: name)
        }
        try world.startParticipant("steady", handler: steady, holds: ["email"])
        try world.startParticipant("flaky", handler: flaky, holds: ["email"])
        return try await world.startExecutor(
            settings: ["ERASURE_RESEND_SECONDS": "1", "ERASURE_MAX_FAILED_ATTEMPTS": "2"])
    }

    /// The flaky participant is handed the command, fails, is re-sent to once (backoff 1 s), fails again: that is the
    /// limit, so the erasure needs attention. Returns its id and how often it was sent to the flaky participant.
    private func expectItNeedsAttention(
        _ started: ExecutorProcess, flaky: FlakyParticipantHandler, accountId: String
    ) async throws -> (erasureId: String, flakySends: Int) {
        let attention = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            guard let id = await flaky.seen.first, let record = try? await started.erasure(id) else {
                return false
            }
            return record.status == .needsAttention
        }
        let erasureId = try #require(await flaky.seen.first, "no command reached the flaky participant")
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
        // At the limit (2) or past it: on a loaded machine a re-send can go out (1 s) before the first failure's ack
        // is applied, and its failure counts too. No re-send follows once the erasure needs attention.
        #expect(flakyState?.outcome == .failed && (flakyState?.failedAttempts ?? 0) >= 2)
        #expect(flakyState?.detail?.contains("participant error") == true)
        #expect(stuck.participants.first { $0.participant == "steady" }?.outcome == .erased)
        #expect(stuck.accountId == accountId, "an open erasure keeps its accountId")
        return (erasureId, flakyState?.sends ?? 0)
    }

    /// `POST /v1/erasures/{id}/retry` re-sends to the fixed participant and the erasure completes, audited; a second
    /// retry of the completed erasure is refused.
    private func retryAndExpectTheCompletion(
        _ started: ExecutorProcess, erasureId: String, sendsBefore: Int, steady: TestParticipantHandler
    ) async throws {
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
        #expect(await steady.applied.count == 1, "the steady participant applied the erasure once")
        let (verifyStatus, verifyBody) = try await started.get("/v1/audit/verify")
        #expect(verifyStatus == 200 && verifyBody.contains(#""ok":true"#), "\(verifyBody)")
        // A second retry of a completed erasure is refused.
        #expect(try await started.call(
            .POST, "/v1/erasures/\(erasureId)/retry", token: ExecutorProcess.adminToken).status == 409)
    }
}

/// The phases of ``ErasureExecutorProcessTests/overdueWhileAParticipantIsDownThenCompletes()``.
extension ErasureExecutorProcessTests {
    /// One deadline day, and one day lasts one second here (ERASURE_DAY_SECONDS); "absent" is declared but not
    /// running. Re-sends every 3600 s: the erasure waits for "absent" without the test depending on re-send timing.
    private func startWithAParticipantDown(
        _ world: ExecutorWorld, present: TestParticipantHandler
    ) async throws -> ExecutorProcess {
        try await world.send(tenant("tenant-o", .scrub, days: 1), topic: world.topics.tenants, key: "tenant-o")
        for name in ["absent", "present"] {
            try await world.send(declared(name), topic: world.topics.erasureParticipants, key: name)
        }
        try world.startParticipant("present", handler: present, holds: ["email"])
        return try await world.startExecutor(settings: ["ERASURE_DAY_SECONDS": "1", "ERASURE_RESEND_SECONDS": "3600"])
    }

    /// The erasure passes its deadline while "absent" is down: overdue in the API and the gauges. Returns its id.
    private func expectItOverdue(_ started: ExecutorProcess, present: TestParticipantHandler) async throws -> String {
        let overdue = await eventually(timeout: .seconds(90), every: .milliseconds(200)) {
            guard let id = await present.applied.first?.erasureId,
                  let record = try? await started.erasure(id)
            else { return false }
            let gauge = try? await started.metric("lethe_erasures_overdue")
            // The present participant's ack may land after the one-second deadline on a busy machine.
            let presentAcked = record.participants.first { $0.participant == "present" }?.outcome == .scrubbed
            return record.overdue && gauge == 1 && presentAcked
        }
        let erasureId = try #require(
            await present.applied.first?.erasureId, "no command reached the running participant")
        try #require(overdue, "the erasure never became overdue: \(started.output())")
        let late = try #require(try await started.erasure(erasureId))
        #expect(late.status == .dispatched && late.deadline < Date())
        #expect(late.participants.first { $0.participant == "present" }?.outcome == .scrubbed)
        #expect(late.participants.first { $0.participant == "absent" }?.outcome == nil)
        #expect(try await started.metric("lethe_erasures_open") == 1)
        #expect(try await started.metric(#"lethe_erasures{status="dispatched"}"#) == 1)
        return erasureId
    }

    /// With "absent" back, the erasure completes and stays marked as late; the gauges and the ack latency follow.
    private func expectTheLateCompletion(_ started: ExecutorProcess, erasureId: String) async throws {
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
    }
}
