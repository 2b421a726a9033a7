import Hummingbird
import HummingbirdTesting
import ServiceKit
import Synchronization
import Testing

@Suite("DurableAnswers: an answer leaves only once the changes it made are on the broker")
struct DurableAnswersTests {
    /// A broker stand-in: counts the waits and answers them as `onTheBroker` says.
    final class Broker: Sendable {
        let waits = Mutex(0)
        let onTheBroker = Mutex(true)

        func wait(_ deadline: ContinuousClock.Instant) async throws -> Bool {
            waits.withLock { $0 += 1 }
            return onTheBroker.withLock { $0 }
        }
    }

    func withRouter(
        readsChangeNothing: Bool, _ body: @Sendable (Broker, any TestClientProtocol) async throws -> Void
    ) async throws {
        let broker = Broker()
        let router = Router()
        router.add(middleware: DurableAnswers(changelog: "lethe.test.state.v1", readsChangeNothing: readsChangeNothing) {
            try await broker.wait($0)
        })
        router.get("/thing") { _, _ in "read" }
        router.head("/thing") { _, _ in HTTPResponse.Status.ok }
        router.post("/thing") { _, _ in "made" }
        router.post("/refused") { _, _ -> String in throw HTTPError(.badRequest, message: "revoked and refused") }
        try await Application(router: router).test(.router) { client in try await body(broker, client) }
    }

    @Test("a change waits and is answered once on the broker; an error waits too and keeps its status")
    func changesWait() async throws {
        try await withRouter(readsChangeNothing: true) { broker, client in
            try await client.execute(uri: "/thing", method: .post) { response in
                #expect(response.status == .ok && String(buffer: response.body) == "made")
            }
            #expect(broker.waits.withLock { $0 } == 1)
            try await client.execute(uri: "/refused", method: .post) { response in
                #expect(response.status == .badRequest)
                #expect(String(buffer: response.body).contains("revoked and refused"))
            }
            #expect(broker.waits.withLock { $0 } == 2)
        }
    }

    @Test("a broker that has not taken the change by the deadline turns the answer into a 503 naming the changelog")
    func notOnTheBrokerIs503() async throws {
        try await withRouter(readsChangeNothing: true) { broker, client in
            broker.onTheBroker.withLock { $0 = false }
            for uri in ["/thing", "/refused"] {
                try await client.execute(uri: uri, method: .post) { response in
                    #expect(response.status == .serviceUnavailable, "\(uri)")
                    let body = String(buffer: response.body)
                    #expect(body.contains("the change is saved but Kafka has not taken it yet (lethe.test.state.v1)"))
                }
            }
        }
    }

    @Test("reads skip the wait where they change nothing, and wait where they can (the gateway's sign-in is a GET)")
    func readsWaitOnlyWhereTheyChangeSomething() async throws {
        try await withRouter(readsChangeNothing: true) { broker, client in
            broker.onTheBroker.withLock { $0 = false }
            try await client.execute(uri: "/thing", method: .get) { #expect($0.status == .ok) }
            try await client.execute(uri: "/thing", method: .head) { #expect($0.status == .ok) }
            #expect(broker.waits.withLock { $0 } == 0)
        }
        try await withRouter(readsChangeNothing: false) { broker, client in
            try await client.execute(uri: "/thing", method: .get) { #expect($0.status == .ok) }
            #expect(broker.waits.withLock { $0 } == 1)
        }
    }
}
