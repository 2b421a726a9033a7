import Contracts
import Foundation
import Messaging
import Testing
import TestSupport

@testable import erasure_executor

/// Two replicas of a service that runs one active replica at a time (ReplicaLease), as processes over the dev broker:
/// the executor with `ERASURE_SINGLE_ACTIVE=true` (profile-store and oauth-gateway always run this way).
@Suite("erasure-executor behind the lease at two replicas: one active, the other a standby that takes over")
struct ExecutorReplicaTests {
    static let leased = ["ERASURE_SINGLE_ACTIVE": "true"]

    @Test("""
        a second replica is a standby — not ready and saying why, its API forwarded to the active replica, its \
        workers idle — while the first is active; kill -9 the active one: the standby answers 503 until it takes over \
        within 30 s on its own volume, continues the open erasure from the changelog and handles what arrives
        """)
    func standbyTakesOver() async throws {
        let kafka = try KafkaFixture("executor-replicas")
        let namespace = uniqueName("ee-replicas")
        let topics = LetheTopics(namespace: namespace)
        let (firstDirectory, secondDirectory) = (try TemporaryDirectory(), try TemporaryDirectory())
        let producer = try kafka.makeProducer()
        let producing = RunningGroup([producer], logger: kafka.logger)
        var started: [ExecutorProcess] = []
        do {
            let active = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: firstDirectory, settings: Self.leased)
            started.append(active)
            let standby = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: secondDirectory, settings: Self.leased, waitFor: "/health/live")
            started.append(standby)

            try await expectOneActiveAndOneStandby(active: active, standby: standby)

            // A closed account while both run: only the active replica takes it in.
            func closed(_ accountId: String) async throws {
                let status = AccountStatusReported(
                    appId: "app-1", accountId: accountId, tenantIds: ["tenant-a"], status: .closed, reportedAt: Date())
                try await producer.send(status, topic: topics.pdrStatus, key: "app-1:\(accountId)")
            }
            try await producer.send(tenant("tenant-a", .delete), topic: topics.tenants, key: "tenant-a")
            try await closed("557058:first")
            let takenByActive = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await active.metric("lethe_erasures_requested_total")) == 1
            }
            #expect(takenByActive, "the active replica did not take the closed account in: \(active.output())")
            #expect((try await standby.metric("lethe_erasures_requested_total") ?? 0) == 0)
            // Its changelog record is out before the kill, so the standby, on a volume of its own, can continue it.
            let opened = try await readUntil(kafka, topic: topics.erasureState) { messages in
                messages.contains { (try? $0.decodeEvent(ErasureState.self))?.accountId == "557058:first" }
            }
            let firstId = try #require(opened.compactMap { try? $0.decodeEvent(ErasureState.self) }.first?.erasureId)

            #expect(active.process.killAndReap() == 128 + SIGKILL)
            let killedAt = ContinuousClock.now
            // The active replica it forwards to is gone, and it has not taken over yet (the session times out in 6 s).
            let meanwhile = try await standby.get("/v1/participants")
            #expect(meanwhile.status == 503 && meanwhile.body.contains("did not answer"), "\(meanwhile)")
            let tookOver = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await standby.get("/health/ready", token: nil).status) == 200
            }
            #expect(tookOver, "the standby did not take over within 30 s: \(standby.output())")
            print("standby took over \(ContinuousClock.now - killedAt) after the active replica was killed")
            #expect(try await standby.metric("lethe_replica_active") == 1)
            // Activated, it read the changelog back into its own (empty) file: the erasure opened by the killed
            // replica is there, open.
            let continued = try await standby.erasure(firstId)
            #expect(continued?.accountId == "557058:first" && continued?.status != .completed, "\(String(describing: continued))")
            try await closed("557058:second")
            let handled = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await standby.metric("lethe_erasures_requested_total")) ?? 0 >= 1
            }
            #expect(handled, "the new active replica did not take a closed account in: \(standby.output())")
        } catch {
            Issue.record(error)
        }
        for process in started { await process.stop() }
        await producing.stop()
    }

    /// The standby says so in its readiness, forwards its API to the active replica (once: a request another replica
    /// forwarded is refused), and its workers are idle; the active one is ready.
    private func expectOneActiveAndOneStandby(active: ExecutorProcess, standby: ExecutorProcess) async throws {
        let saysStandby = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
            guard let (status, body) = try? await standby.get("/health/ready", token: nil) else { return false }
            return status == 503 && body.contains("standby: another replica of erasure-executor is active")
        }
        #expect(saysStandby, "the second replica never said it is a standby: \(standby.output())")
        let direct = try await active.get("/v1/participants")
        #expect(direct.status == 200)
        // Once it has read the active replica's announcement, the standby answers with the active replica's answer.
        let forwards = await eventually(timeout: .seconds(10), every: .milliseconds(100)) {
            (try? await standby.get("/v1/participants"))?.status == 200
        }
        #expect(forwards, "the standby did not forward to the active replica: \(standby.output())")
        let viaStandby = try await standby.get("/v1/participants")
        func overview(_ body: String) throws -> ParticipantsOverview {
            try JSONDecoder().decode(ParticipantsOverview.self, from: Data(body.utf8))
        }
        #expect(try overview(viaStandby.body) == overview(direct.body), "\(viaStandby.body) against \(direct.body)")
        #expect(try await standby.metric(#"lethe_replica_forwarded_total{outcome="answered"}"#) ?? 0 >= 2)
        let twice = try await standby.call(
            .GET, "/v1/participants", token: ExecutorProcess.adminToken, headers: ["Lethe-Forwarded-By": "r-another"])
        #expect(twice.status == 503 && twice.body.contains("already forwarded") && twice.body.contains("requestId"), "\(twice)")
        #expect(try await active.get("/health/ready", token: nil).status == 200)
        #expect(try await active.metric("lethe_replica_active") == 1)
        #expect(try await standby.metric("lethe_replica_active") == 0)
    }

    @Test("""
        an active replica frozen past its session (SIGSTOP) loses the lease to the standby; woken up, it stops with an \
        error instead of running beside the new active one
        """)
    func frozenActiveReplicaStops() async throws {
        let kafka = try KafkaFixture("executor-replicas")
        let namespace = uniqueName("ee-frozen")
        let (firstDirectory, secondDirectory) = (try TemporaryDirectory(), try TemporaryDirectory())
        var started: [ExecutorProcess] = []
        do {
            let active = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: firstDirectory, settings: Self.leased.merging(["LOG_LEVEL": "info"]) { $1 })
            started.append(active)
            let standby = try await ExecutorProcess.start(
                kafka: kafka, namespace: namespace, directory: secondDirectory, settings: Self.leased, waitFor: "/health/live")
            started.append(standby)
            let waiting = await eventually(timeout: .seconds(30), every: .milliseconds(200)) {
                (try? await standby.get("/health/ready", token: nil))?.body.contains("standby") == true
            }
            try #require(waiting, "the second replica never became a standby: \(standby.output())")

            active.process.send(SIGSTOP)
            let tookOver = await eventually(timeout: .seconds(40), every: .milliseconds(200)) {
                (try? await standby.get("/health/ready", token: nil).status) == 200
            }
            active.process.send(SIGCONT)
            #expect(tookOver, "the standby did not take over from a frozen replica: \(standby.output())")
            let stopped = await active.process.exited(within: .seconds(30))
            #expect(stopped, "the replica that lost the lease kept running: \(active.output().suffix(4000))")
            // Status 1 and one line, not a crash: Swift's backtracer kept a crashed replica alive past 30 s.
            #expect(active.process.terminationStatus == 1, "it must end with an error")
            #expect(active.output().contains("stopped: this replica lost the active lease"), "\(active.output().suffix(2000))")
            #expect(!active.output().contains("Fatal error"), "\(active.output().suffix(2000))")
            #expect(try await standby.get("/health/ready", token: nil).status == 200)
        } catch {
            Issue.record(error)
        }
        for process in started { await process.stop() }
    }
}
