import Foundation
import Hummingbird

/// `GET /v1/apps`: the per-app reporting status, behind `LETHE_ADMIN_TOKEN`.
///
/// The decision (auth, body) is a plain function so it is tested without a server; the route is a thin adapter.
package struct AppsStatusEndpoint: Sendable {
    /// nil: no admin token configured, so nobody is let in (a missing setting must not open the endpoint).
    private let adminToken: String?
    private let status: @Sendable () async throws -> [AppReportingStatus]

    package init(adminToken: String?, status: @escaping @Sendable () async throws -> [AppReportingStatus]) {
        self.adminToken = adminToken
        self.status = status
    }

    /// 200 with `{"apps": [...]}`, 401 without the right bearer, 500 (no details) when the registry fails.
    package func respond(authorization: String?) async -> (status: Int, body: Data) {
        guard let adminToken, let authorization, authorization.hasPrefix("Bearer "),
              Self.constantTimeEquals(Array(authorization.dropFirst("Bearer ".count).utf8), Array(adminToken.utf8))
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

    /// Compares without an early exit, so response time does not reveal how much of a guessed token was right.
    /// The length still shows; admin tokens have a fixed, configured length, so that reveals nothing useful.
    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
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
