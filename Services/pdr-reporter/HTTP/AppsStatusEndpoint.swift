import Foundation
import Hummingbird
import ServiceKit

/// `GET /v1/apps`: the per-app reporting status, behind `LETHE_ADMIN_TOKEN`.
///
/// Errors are `HTTPError`s, which `RequestLogMiddleware` answers in the shape of every Lethe service,
/// `{"error", "message", "requestId"}` — the same path as `BearerSecret.require` in the other services — so an
/// operator's tooling parses one error shape everywhere.
package struct AppsStatusEndpoint: Sendable {
    /// nil: no admin token configured, so nobody is let in (a missing setting must not open the endpoint).
    private let adminToken: BearerSecret?
    private let status: @Sendable () async throws -> [AppReportingStatus]

    package init(adminToken: String?, status: @escaping @Sendable () async throws -> [AppReportingStatus]) {
        self.adminToken = adminToken.map { BearerSecret($0, realm: "admin token") }
        self.status = status
    }

    /// `{"apps": [...]}` (sorted keys, ISO 8601 dates); throws a 401 `HTTPError` (with a `WWW-Authenticate: Bearer`
    /// challenge) without the right bearer, and a 500 one with no details when the registry cannot be read.
    package func respond(to request: Request) async throws -> Response {
        guard let adminToken else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "admin token required")
        }
        try adminToken.require(request)
        let apps: [AppReportingStatus]
        do {
            apps = try await status()
        } catch {
            throw HTTPError(.internalServerError, message: "reporting status unavailable")
        }
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: try encoder.encode(["apps": apps]))))
    }
}

extension Router {
    /// Serves `endpoint` at `GET /v1/apps`.
    package func addAppsStatusRoute(_ endpoint: AppsStatusEndpoint) {
        get("/v1/apps") { request, _ -> Response in try await endpoint.respond(to: request) }
    }
}
