import AsyncHTTPClient
import Contracts
import Foundation
import Messaging
import NIOCore
import NIOHTTP1
import Testing
import TestSupport

@testable import erasure_executor

extension ExecutorProcess {
    /// A request with a JSON body; `(status, body)`.
    func send(_ method: HTTPMethod, _ path: String, token: String?, json: String?) async throws
        -> (status: Int, body: String)
    {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }
}

@Suite("erasure-executor as a process: rejected declarations raise the alert, operators retire participants")
struct ErasureExecutorRetireProcessTests {
    let kafka: KafkaFixture

    init() throws { kafka = try KafkaFixture("erasure-executor-retire") }

    @Test("""
        a declaration that cannot be read goes to the DLQ with an alert (metric, error log) and its participant is \
        still waited for; POST /v1/participants/{name}/retire (admin, reason required, 404 unknown) waives it in the \
        open erasure, which completes audited with the reasons and is published with outcome waived; after a restart \
        the retired participants stay retired and the bad declaration is not dead-lettered again
        """)
    func rejectedDeclarationThenRetireOverHTTP() async throws {
        let world = try await ExecutorWorld(kafka: kafka, namespace: "ee15-retire")
        let accountId = "557058:retire-\(UUID().uuidString.prefix(6))"
        let held = TestParticipantHandler.Held(name: "Grace Hopper", email: "g@example.com")
        let steadyHandler = TestParticipantHandler(held: ["t-ret/\(accountId)": held])
        do {
            let started = try await startWithABrokenDeclaration(world, steady: steadyHandler)
            try await expectTheRejectionAlert(started, world: world)
            let erasureId = try await closeAndAwaitTheSteadyAck(
                started, world: world, steady: steadyHandler, accountId: accountId)
            try await expectTheRetireRouteRefusesBadRequests(started)
            try await retireBothParticipants(started, erasureId: erasureId)
            try await expectTheWaivedCompletion(
                started, world: world, erasureId: erasureId, accountId: accountId, held: held)
            try await restartAndExpectTheRetirementsKept(world)
        } catch {
            Issue.record(error)
        }
        await world.stop()
    }
}

/// The scenario's phases, in order.
extension ErasureExecutorRetireProcessTests {
    /// Declares "retiring" and "steady" and a third participant whose declaration cannot be read, starts "steady",
    /// then the executor.
    private func startWithABrokenDeclaration(
        _ world: ExecutorWorld, steady: TestParticipantHandler
    ) async throws -> ExecutorProcess {
        let topics = world.topics
        try await world.send(tenant("t-ret", .delete), topic: topics.tenants, key: "t-ret")
        for name in ["retiring", "steady"] {
            try await world.send(declared(name), topic: topics.erasureParticipants, key: name)
        }
        // A declaration whose body is not JSON, with every CloudEvents header.
        let headers = CloudEventAttributes(
            id: UUID().uuidString, type: ParticipantDeclared.eventType, source: "/crm", time: Date()
        ).headers.map { KafkaHeader(name: $0.name, string: $0.value) }
        try await world.send(OutgoingMessage(
            topic: topics.erasureParticipants, key: "broken-crm", value: Array("{\"participant\":".utf8),
            headers: headers))
        try world.startParticipant("steady", handler: steady)
        return try await world.startExecutor(settings: ["LOG_LEVEL": "info"])
    }

    /// Ready only with the state read; the rejected declaration raised the alert and is still a participant.
    private func expectTheRejectionAlert(_ started: ExecutorProcess, world: ExecutorWorld) async throws {
        let (readyStatus, readyBody) = try await started.get("/health/ready", token: nil)
        #expect(readyStatus == 200 && readyBody.contains(#""name":"state""#), "\(readyBody)")
        let alert = await eventually(timeout: .seconds(20), every: .milliseconds(200)) {
            let rejected = try? await started.metric("lethe_erasure_participant_declarations_rejected_total")
            let gauge = try? await started.metric("lethe_erasure_participants_rejected")
            return (rejected ?? 0) >= 1 && gauge == 1
        }
        #expect(alert, "no alert metric for the rejected declaration")
        #expect(started.output().contains("participant declaration rejected"), "no error log for it")
        let (_, participantsBody) = try await started.get("/v1/participants")
        #expect(participantsBody.contains(#""participant":"broken-crm""#)
            && participantsBody.contains("rejectedDeclaration"), "\(participantsBody)")
        let dead = try await readUntil(world.kafka, topic: DeadLetterQueue.topic(for: world.topics.erasureParticipants)) {
            $0.count >= 1
        }
        #expect(dead.first?.keyString == "broken-crm" && dead.first?.header(DeadLetterQueue.errorHeader) != nil)
    }

    /// The account closes: "steady" erases it, and the erasure waits for the other two. Returns its id.
    private func closeAndAwaitTheSteadyAck(
        _ started: ExecutorProcess, world: ExecutorWorld, steady: TestParticipantHandler, accountId: String
    ) async throws -> String {
        try await world.send(
            AccountStatusReported(
                appId: "app-1", accountId: accountId, tenantIds: ["t-ret"], status: .closed, reportedAt: Date()),
            topic: world.topics.pdrStatus, key: "app-1:\(accountId)")
        let steadyAcked = await eventually(timeout: .seconds(60), every: .milliseconds(200)) {
            guard let id = await steady.applied.first?.erasureId,
                  let record = try? await started.erasure(id)
            else { return false }
            return record.participants.first { $0.participant == "steady" }?.outcome == .erased
        }
        try #require(steadyAcked, "the erasure did not reach the running participant")
        let erasureId = try #require(await steady.applied.first?.erasureId)
        let waiting = try #require(try await started.erasure(erasureId))
        #expect(waiting.participants.map(\.participant) == ["broken-crm", "retiring", "steady"])
        #expect(waiting.status == .dispatched)
        return erasureId
    }

    /// The route: admin only, a reason, a known participant.
    private func expectTheRetireRouteRefusesBadRequests(_ started: ExecutorProcess) async throws {
        let admin = ExecutorProcess.adminToken
        let retire = "/v1/participants/retiring/retire"
        #expect(try await started.send(.POST, retire, token: nil, json: #"{"reason":"x"}"#).status == 401)
        let (noBody, noBodyText) = try await started.send(.POST, retire, token: admin, json: nil)
        #expect(noBody == 400 && noBodyText.contains("reason"), "\(noBodyText)")
        let (blank, blankText) = try await started.send(.POST, retire, token: admin, json: #"{"reason":"  "}"#)
        #expect(blank == 400 && blankText.contains("reason"), "\(blankText)")
        let (email, emailText) = try await started.send(
            .POST, retire, token: admin, json: #"{"reason":"asked by g@example.com"}"#)
        #expect(email == 400 && emailText.contains("personal data"), "\(emailText)")
        let (unknown, _) = try await started.send(
            .POST, "/v1/participants/nobody/retire", token: admin, json: #"{"reason":"typo"}"#)
        #expect(unknown == 404)
    }

    /// Retiring "retiring" leaves the erasure waiting for broken-crm; retiring broken-crm too completes it.
    private func retireBothParticipants(_ started: ExecutorProcess, erasureId: String) async throws {
        let admin = ExecutorProcess.adminToken
        let (first, firstBody) = try await started.send(
            .POST, "/v1/participants/retiring/retire", token: admin,
            json: #"{"reason":"decommissioned in change OPS-42"}"#)
        #expect(first == 200, "\(firstBody)")
        #expect(firstBody.contains(erasureId) && firstBody.contains(#""completed":[]"#), "\(firstBody)")
        #expect(try await started.erasure(erasureId)?.status == .dispatched, "it still waits for broken-crm")
        let (second, secondBody) = try await started.send(
            .POST, "/v1/participants/broken-crm/retire", token: admin, json: #"{"reason":"never fixed, OPS-43"}"#)
        #expect(second == 200 && secondBody.contains(#""completed":["\#(erasureId)"]"#), "\(secondBody)")
    }

    /// Completed, audited with the reasons, published with outcome waived; the metrics follow, and the log holds
    /// neither the accountId nor what the participant held.
    private func expectTheWaivedCompletion(
        _ started: ExecutorProcess, world: ExecutorWorld, erasureId: String, accountId: String,
        held: TestParticipantHandler.Held
    ) async throws {
        let done = try #require(try await started.erasure(erasureId))
        #expect(done.status == .completed && done.accountId == nil)
        #expect(done.participants.map(\.outcome) == [.waived, .waived, .erased])
        let (verifyStatus, verifyBody) = try await started.get("/v1/audit/verify")
        #expect(verifyStatus == 200 && verifyBody.contains(#""ok":true"#), "\(verifyBody)")
        let (_, export) = try await started.get("/v1/audit/export")
        #expect(export.contains(#""outcome":"waived","participant":"retiring","reason":"decommissioned in change OPS-42""#),
                "\(export)")
        #expect(!export.contains(accountId))
        let completions = try await readUntil(world.kafka, topic: world.topics.erasureCompleted) { $0.count >= 1 }
        let receipt = try completions[0].decodeEvent(ErasureCompleted.self)
        #expect(receipt.outcomes.map(\.outcome) == [.waived, .waived, .erased])
        #expect(receipt.outcomes.map(\.reason) == ["never fixed, OPS-43", "decommissioned in change OPS-42", nil])
        let counted = await eventually(timeout: .seconds(10), every: .milliseconds(200)) {
            let retired = try? await started.metric("lethe_erasure_participants_retired_total")
            let waived = try? await started.metric("lethe_erasure_outcomes_waived_total")
            let rejected = try? await started.metric("lethe_erasure_participants_rejected")
            return retired == 2 && waived == 2 && rejected == 0
        }
        #expect(counted, "the retirement metrics did not follow")
        // No personal data in the log at info level.
        for secret in [accountId, held.name, held.email] {
            #expect(!started.output().contains(secret), "the log holds personal data")
        }
    }

    /// A restart re-reads the participants topic: the retired ones' declarations are older than their retirement and
    /// stay ignored; the bad declaration is not sent to the DLQ a second time.
    private func restartAndExpectTheRetirementsKept(_ world: ExecutorWorld) async throws {
        await world.stopExecutor()
        let restarted = try await world.startExecutor(settings: [:])
        let (_, afterRestart) = try await restarted.get("/v1/participants")
        let overview = try JSONDecoder.iso8601.decode(ParticipantsOverview.self, from: Data(afterRestart.utf8))
        #expect(overview.declared.map(\.participant) == ["steady"], "\(afterRestart)")
        #expect(overview.retirements.map(\.participant) == ["retiring", "broken-crm"])
        try await world.send(declared("sentinel"), topic: world.topics.erasureParticipants, key: "sentinel")
        let sentinel = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            let (_, body) = (try? await restarted.get("/v1/participants")) ?? (0, "")
            return body.contains(#""participant":"sentinel""#)
        }
        #expect(sentinel)
        // Read until a second dead letter shows up, which must not happen: the wait times out.
        let deadAgain = try? await readUntil(
            world.kafka, topic: DeadLetterQueue.topic(for: world.topics.erasureParticipants), timeout: .seconds(15)
        ) { $0.count >= 2 }
        #expect(deadAgain == nil, "the rejected declaration was dead-lettered again at the restart")
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
