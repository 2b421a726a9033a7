import Foundation
import GRDB

/// An OpenID client: the tenant itself (confidential: its secret, its return URLs as redirect URIs) or one of its
/// public clients (a browser or mobile app: no secret, PKCE required, redirect URIs of its own).
struct OpenIDClient: Sendable, Equatable {
    var clientId: String
    var tenant: TenantRecord
    var app: AppRecord?
    var redirectURIs: [String]
    var isPublic: Bool
    /// The tenant's client secret hash, for the confidential client; nil for a public one.
    var secretHash: Data?
}

struct PublicClientRecord: Sendable, Equatable {
    var clientId: String
    var redirectURIs: [String]
}

extension GatewayDatabase {
    // MARK: OpenID clients

    static let maxPublicClients = 20

    /// The client `clientId` names, read on the calling thread (every authorization and token request asks).
    func openIDClientNow(_ clientId: String) throws -> OpenIDClient? {
        try database.readNow { db in try Self.openIDClient(clientId, in: db) }
    }

    static func openIDClient(_ clientId: String, in db: GRDB.Database) throws -> OpenIDClient? {
        if let tenant = try tenant(clientId, in: db) {
            return OpenIDClient(
                clientId: clientId, tenant: tenant, app: try tenant.appId.flatMap { try app($0, in: db) },
                redirectURIs: tenant.returnURLs, isPublic: false,
                secretHash: try Data.fetchOne(
                    try db.cachedStatement(sql: "SELECT secret_hash FROM tenants WHERE tenant_id = ?"),
                    arguments: [clientId]))
        }
        guard let row = try Row.fetchOne(
                try db.cachedStatement(sql: "SELECT tenant_id, redirect_uris FROM public_clients WHERE client_id = ?"),
                arguments: [clientId]),
              let tenant = try tenant(row["tenant_id"], in: db)
        else { return nil }
        return OpenIDClient(
            clientId: clientId, tenant: tenant, app: try tenant.appId.flatMap { try app($0, in: db) },
            redirectURIs: try JSONDecoder().decode([String].self, from: Data((row["redirect_uris"] as String).utf8)),
            isPublic: true)
    }

    /// Registers a public client of the tenant; nil when it has ``maxPublicClients`` already.
    func createPublicClient(of tenantId: String, redirectURIs: [String], now: Date = Date()) async throws
        -> PublicClientRecord?
    {
        // A tenant id never holds a '.', so no public client id can be taken for a tenant's.
        let clientId = "\(tenantId).pub-\(UUID().uuidString.lowercased().prefix(12))"
        let encoded = String(decoding: try JSONEncoder().encode(redirectURIs), as: UTF8.self)
        return try await database.write { db in
            let count = try Int.fetchOne(
                db, sql: "SELECT count(*) FROM public_clients WHERE tenant_id = ?", arguments: [tenantId]) ?? 0
            guard count < Self.maxPublicClients else { return nil }
            try db.execute(
                sql: "INSERT INTO public_clients (client_id, tenant_id, redirect_uris, created_at) VALUES (?, ?, ?, ?)",
                arguments: [clientId, tenantId, encoded, now.timeIntervalSince1970])
            return PublicClientRecord(clientId: clientId, redirectURIs: redirectURIs)
        }
    }

    func publicClients(of tenantId: String) async throws -> [PublicClientRecord] {
        try await database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT client_id, redirect_uris FROM public_clients WHERE tenant_id = ? ORDER BY created_at",
                arguments: [tenantId]
            ).map { row in
                PublicClientRecord(
                    clientId: row["client_id"],
                    redirectURIs: try JSONDecoder().decode([String].self, from: Data((row["redirect_uris"] as String).utf8)))
            }
        }
    }

    /// Removes a public client of the tenant; false when it has none by that id.
    func deletePublicClient(_ clientId: String, of tenantId: String) async throws -> Bool {
        try await database.write { db in
            try db.execute(
                sql: "DELETE FROM public_clients WHERE client_id = ? AND tenant_id = ?", arguments: [clientId, tenantId])
            return db.changesCount == 1
        }
    }
}
