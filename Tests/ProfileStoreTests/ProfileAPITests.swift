import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import ServiceKit
import Testing
import TestSupport

@testable import profile_store

@Suite("The tenant-scoped profile API over HTTP, with tokens verified against a JWKS")
struct ProfileAPITests {
    /// A real SQLite file with profiles of two tenants, and the API in front of it.
    func withAPI(_ body: @Sendable (TestClientProtocol, JWKSServer.SigningKey) async throws -> Void) async throws {
        let directory = try TemporaryDirectory()
        let database = try ProfileDatabase(path: directory.url.appendingPathComponent("p.sqlite").path)
        _ = try await database.ingest([
            fetched("tenant-a", "acc-1", at: 10, name: "Ada"),
            fetched("tenant-a", "acc-2", at: 11, name: "Grace"),
            fetched("tenant-a", "acc-3", at: 12, name: "Alan"),
            fetched("tenant-b", "acc-9", at: 13, name: "Barbara"),
            fetched("tenant-b", "acc-1", at: 14, name: "Ada at B"),
        ])
        let server = JWKSServer()
        let key = JWKSServer.SigningKey(kid: "k1")
        server.publish([key])
        try await server.run { verifier in
            let router = Router(context: LetheRequestContext.self)
            ProfileAPI.addRoutes(to: router, database: database, verifier: verifier)
            try await Application(router: router).test(.router) { client in try await body(client, key) }
        }
        _ = directory
    }

    func get(_ client: TestClientProtocol, _ uri: String, token: String?) async throws -> (HTTPResponse.Status, String) {
        try await client.execute(
            uri: uri, method: .get, headers: token.map { [.authorization: "Bearer \($0)"] } ?? [:]
        ) { ($0.status, String(buffer: $0.body)) }
    }

    @Test("a tenant reads its own profile; another tenant's token gets 404 and never the data")
    func tenantIsolation() async throws {
        try await withAPI { client, key in
            let tokenA = try await key.token(tenant: "tenant-a")
            let tokenB = try await key.token(tenant: "tenant-b")
            let (status, body) = try await get(client, "/v1/tenants/tenant-a/profiles/acc-1", token: tokenA)
            #expect(status == .ok)
            let profile = try JSONDecoder.iso.decode(ProfileResponse.self, from: Data(body.utf8))
            #expect(profile.name == "Ada" && profile.tenantId == "tenant-a" && profile.accountId == "acc-1")

            // B's token on A's path: 404, as if nothing were there.
            let (crossStatus, crossBody) = try await get(client, "/v1/tenants/tenant-a/profiles/acc-1", token: tokenB)
            #expect(crossStatus == .notFound)
            #expect(!crossBody.contains("Ada") && !crossBody.contains("example.com"))
            // B on its own path sees its own copy of the same account, never A's.
            let (ownStatus, ownBody) = try await get(client, "/v1/tenants/tenant-b/profiles/acc-1", token: tokenB)
            #expect(ownStatus == .ok && ownBody.contains("Ada at B") && !ownBody.contains("\"Ada\""))
            // An account only A holds does not exist for B.
            #expect(try await get(client, "/v1/tenants/tenant-b/profiles/acc-2", token: tokenB).0 == .notFound)
            // No token, or a bad one: 401.
            #expect(try await get(client, "/v1/tenants/tenant-a/profiles/acc-1", token: nil).0 == .unauthorized)
            #expect(try await get(client, "/v1/tenants/tenant-a/profiles/acc-1", token: "x.y.z").0 == .unauthorized)
            let expired = try await key.token(tenant: "tenant-a", expiresIn: -10)
            #expect(try await get(client, "/v1/tenants/tenant-a/profiles/acc-1", token: expired).0 == .unauthorized)
        }
    }

    @Test("the list pages with an opaque cursor and stays within the tenant")
    func listPages() async throws {
        try await withAPI { client, key in
            let token = try await key.token(tenant: "tenant-a")
            var names: [String?] = []
            var uri = "/v1/tenants/tenant-a/profiles?limit=2"
            var pages = 0
            while true {
                let (status, body) = try await get(client, uri, token: token)
                #expect(status == .ok)
                let page = try JSONDecoder.iso.decode(ProfilePage.self, from: Data(body.utf8))
                #expect(page.profiles.allSatisfy { $0.tenantId == "tenant-a" })
                names += page.profiles.map(\.name)
                pages += 1
                guard let cursor = page.nextCursor, pages < 10 else { break }
                uri = "/v1/tenants/tenant-a/profiles?limit=2&cursor=\(cursor)"
            }
            #expect(names == ["Ada", "Grace", "Alan"])
            #expect(pages == 2)
        }
    }

    @Test("bad input is a 400 with a reason")
    func badInputIs400() async throws {
        try await withAPI { client, key in
            let token = try await key.token(tenant: "tenant-a")
            for (uri, reason) in [
                ("/v1/tenants/tenant-a/profiles?limit=0", "limit"),
                ("/v1/tenants/tenant-a/profiles?limit=ten", "limit"),
                ("/v1/tenants/tenant-a/profiles?limit=501", "limit"),
                ("/v1/tenants/tenant-a/profiles?cursor=bm9wZQ", "cursor"),
                ("/v1/tenants/tenant-a/profiles/bad%20id", "accountId"),
            ] {
                let (status, body) = try await get(client, uri, token: token)
                #expect(status == .badRequest, "\(uri)")
                #expect(body.contains(reason), "\(uri): \(body)")
            }
        }
    }
}

extension JSONDecoder {
    /// Hummingbird writes dates as ISO 8601.
    static var iso: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
