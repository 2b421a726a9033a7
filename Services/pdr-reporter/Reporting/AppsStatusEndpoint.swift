import Foundation
import Hummingbird
import ServiceKit

/// `GET /v1/apps`: the per-app reporting status, behind `LETHE_ADMIN_TOKEN`.
///
/// The decision (auth, body) is a plain function so it is tested without a server; the route is a thin adapter.
package struct AppsStatusEndpoint: Sendable {
    /// nil: no admin token configured, so nobody is let in (a missing setting must not open the endpoint).
    private let adminToken: BearerSecret?
    private let status: @Sendable () async throws -> [AppReportingStatus]

    package init(adminToken: String?, status: @escaping @Sendable () async throws -> [AppReportingStatus]) {
        self.adminToken = adminToken.map { BearerSecret($0, realm: "admin token") }
        self.status = status
    }

    /// 200 with `{"apps": [...]}`, 401 without the right bearer, 500 (no details) when the registry fails.
    package func respond(authorization: String?) async -> (status: Int, body: Data) {
        guard let adminToken, let authorization, authorization.hasPrefix("Bearer "),
              adminToken.matches(authorization.dropFirst("Bearer ".count))
        else { return (401, Data(#"{"error":"unauthorized"}"#.utf8)) }
        do {
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys]
            return (200, try encoder.encode(["apps": try await status()]))
        } catch {
            return (500, Data(#"{"error":"internal"}"#.utf8))
        }
    }
}

extension Router {
    /// Serves `endpoint` at `GET /v1/apps`.
    package func addAppsStatusRoute(_ endpoint: AppsStatusEndpoint) {
        get("/v1/apps") { request, _ -> Response in
            let answer = await endpoint.respond(authorization: request.headers[.authorization])
            return Response(
                status: .init(code: answer.status), headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
    }
}
