import Hummingbird
import HummingbirdTesting
import Logging
import ServiceKit
import Testing
import TestSupport

@Suite("The access log and request id of every service")
struct RequestLogMiddlewareTests {
    /// A router as the services build it: the middleware first, then routes that log, answer, or throw.
    static func application(logs: RecordedLogs) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: RequestLogMiddleware())
        router.get("/v1/items/:id") { _, context -> String in
            context.logger.info("handled")
            return "ok"
        }
        router.get("/v1/missing/:id") { _, _ -> String in throw HTTPError(.notFound, message: "no such item") }
        router.get("/health/live") { _, _ in "live" }
        return Application(router: router, logger: Logger(label: "test", factory: logs.handler))
    }

    @Test("""
        one line per request with the route template, status and duration, never the path as sent or the query; the \
        caller's X-Request-Id comes back and is on every line the handler logs
        """)
    func logsTheRouteNotThePath() async throws {
        let logs = RecordedLogs()
        try await Self.application(logs: logs).test(.router) { client in
            try await client.execute(
                uri: "/v1/items/557058:secret-account?code=top-secret-code", method: .get,
                headers: [.requestId: "trace-42.a_b"]
            ) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.requestId] == "trace-42.a_b")
            }
        }
        let text = logs.text
        #expect(!text.contains("secret-account") && !text.contains("top-secret-code"), "\(text)")
        let lines = text.split(separator: "\n")
        let access = lines.filter { $0.contains(": request ") }
        #expect(access.count == 1, "\(text)")
        #expect(access.first.map { $0.hasPrefix("info") && $0.contains("/v1/items/{id}") && $0.contains("200") } == true, "\(text)")
        #expect(access.first?.contains("trace-42.a_b") == true)
        #expect(lines.contains { $0.contains(": handled ") && $0.contains("trace-42.a_b") }, "\(text)")
    }

    @Test("an error answer carries the id too; an unusable offered id is replaced; unmatched paths and probes are logged without their path")
    func errorsUnmatchedAndProbes() async throws {
        let logs = RecordedLogs()
        try await Self.application(logs: logs).test(.router) { client in
            try await client.execute(uri: "/v1/missing/557058:other", method: .get, headers: [.requestId: "bad id"]) {
                response in
                #expect(response.status == .notFound)
                let id = try #require(response.headers[.requestId])
                #expect(id != "bad id" && id.count == 36, "\(id)")
            }
            try await client.execute(uri: "/v1/nowhere/557058:third", method: .get) { response in
                #expect(response.status == .notFound)
                #expect(response.headers[.requestId] != nil)
            }
            try await client.execute(uri: "/health/live", method: .get) { #expect($0.status == .ok) }
        }
        let text = logs.text
        #expect(!text.contains("557058"), "\(text)")
        let access = text.split(separator: "\n").filter { $0.contains(": request ") }
        #expect(access.contains { $0.hasPrefix("info") && $0.contains("/v1/missing/{id}") && $0.contains("404") }, "\(text)")
        #expect(access.contains { $0.contains("unmatched") && $0.contains("404") }, "\(text)")
        #expect(access.contains { $0.hasPrefix("debug") && $0.contains("/health/live") }, "\(text)")
    }
}
