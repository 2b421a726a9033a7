import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import ServiceKit
import Testing
import TestSupport

/// An unexpected error whose text holds personal data, as a database or decoding error's text may.
private struct FaultWithPersonalData: Error, CustomStringConvertible {
    var text: String
    var description: String { text }
}

@Suite("The access log, request id and error shape of every service")
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
        router.get("/v1/locked") { _, _ -> String in
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "admin token required")
        }
        router.get("/v1/broken") { _, _ -> String in throw FaultWithPersonalData(text: "ada@example.test") }
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

    @Test("""
        every error is {error, message, requestId}: a handler's HTTPError keeps its status, reason and headers, an \
        unmatched path is not_found, an unexpected error is a 500 without its text (logged by type only)
        """)
    func oneErrorShape() async throws {
        let logs = RecordedLogs()
        @Sendable func body(_ response: TestResponse) throws -> ErrorBody {
            #expect(response.headers[.contentType]?.hasPrefix("application/json") == true)
            return try JSONDecoder().decode(ErrorBody.self, from: Data(buffer: response.body))
        }
        try await Self.application(logs: logs).test(.router) { client in
            try await client.execute(uri: "/v1/missing/x", method: .get, headers: [.requestId: "r-1"]) { response in
                let error = try body(response)
                #expect(error == ErrorBody(status: .notFound, message: "no such item", requestId: "r-1"))
                #expect(error.error == "not_found")
            }
            try await client.execute(uri: "/v1/locked", method: .get, headers: [.requestId: "r-2"]) { response in
                #expect(response.status == .unauthorized && response.headers[.wwwAuthenticate] == "Bearer")
                let error = try body(response)
                #expect(error.error == "unauthorized" && error.message == "admin token required" && error.requestId == "r-2")
            }
            try await client.execute(uri: "/v1/nowhere", method: .get) { response in
                let error = try body(response)
                #expect(error.error == "not_found" && error.message == "not found")
                #expect(error.requestId == response.headers[.requestId])
            }
            try await client.execute(uri: "/v1/broken", method: .get, headers: [.requestId: "r-3"]) { response in
                #expect(response.status == .internalServerError)
                let error = try body(response)
                #expect(error.error == "internal_server_error" && error.message == "internal server error")
                #expect(!String(buffer: response.body).contains("ada@"))
            }
        }
        let text = logs.text
        #expect(!text.contains("ada@example.test"), "\(text)")
        #expect(text.split(separator: "\n").contains {
            $0.hasPrefix("error") && $0.contains("FaultWithPersonalData") && $0.contains("r-3")
        }, "\(text)")
    }

    @Test("without error bodies (the sandbox, imitating Atlassian) a thrown HTTPError keeps Hummingbird's own shape")
    func errorBodiesOff() async throws {
        let router = Router()
        router.add(middleware: RequestLogMiddleware(errorBodies: false))
        router.get("/x") { _, _ -> String in throw HTTPError(.badRequest, message: "nope") }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/x", method: .get) { response in
                #expect(response.status == .badRequest && response.headers[.requestId] != nil)
                #expect(String(buffer: response.body) == #"{"error":{"message":"nope"}}"#)
            }
        }
    }
}
