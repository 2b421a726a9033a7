import Contracts
import Foundation
import Testing
import TestSupport

@testable import oauth_gateway

/// Two gateway replicas on one file (compose's replicas share a volume): the signing keys they start with and the
/// ones a standby must see when it takes over.
@Suite("Signing keys across replicas sharing a file")
struct SigningKeyReplicaTests {
    struct Replica {
        var database: GatewayDatabase
        var signer: TokenSigner

        init(_ path: String, topics: LetheTopics, master: Data) throws {
            database = try GatewayDatabase(path: path, topics: topics)
            signer = TokenSigner(
                database: database, box: try SecretBox(masterKey: master, database: database), retention: 3600)
        }

        /// The kids the replica publishes, and the one its next token carries.
        func keys() async throws -> (published: [String], signing: String) {
            let document = try JSONSerialization.jsonObject(with: await signer.jwksDocument()) as? [String: Any]
            let published = (document?["keys"] as? [[String: Any]] ?? []).compactMap { $0["kid"] as? String }
            let claims = IDTokenClaims(
                iss: .init(value: "https://gw.example"), aud: .init(value: ["acme"]), sub: .init(value: "u"),
                iat: .init(value: Date()), exp: .init(value: Date().addingTimeInterval(60)), atlassianAccountId: "a")
            let token = try await signer.sign(claims)
            let header = try #require(token.split(separator: ".").first.flatMap { Base64URL.decode(String($0)) })
            let kid = try #require((try JSONSerialization.jsonObject(with: header) as? [String: Any])?["kid"] as? String)
            return (published.sorted(), kid)
        }
    }

    @Test("""
        two replicas starting together on a new file keep one first key; after the active one rotates, the standby \\
        that reloads (as it does before it becomes active) publishes and signs with the new key
        """)
    func firstKeyAndTakeover() async throws {
        let directory = try TemporaryDirectory("signing-keys")
        let path = directory.file("oauth-gateway.sqlite")
        let topics = LetheTopics(namespace: uniqueName("keys"))
        let master = DataKeyRotationTests.randomKey()
        let active = try Replica(path, topics: topics, master: master)
        let standby = try Replica(path, topics: topics, master: master)
        // Each makes a first key, as both do on a new file; the second finds one and keeps it.
        try await active.database.addFirstSigningKey(kid: "first-a", sealedPrivateKey: Data("x".utf8))
        try await standby.database.addFirstSigningKey(kid: "first-b", sealedPrivateKey: Data("y".utf8))
        let stored = try await active.database.signingKeys(publishedSince: .distantPast).map(\.kid)
        #expect(stored == ["first-a"])
        try await active.database.revokeSigningKey(kid: "first-a")  // (a placeholder, not a real key)

        async let loadedActive: Void = active.signer.load()
        async let loadedStandby: Void = standby.signer.load()
        _ = try await (loadedActive, loadedStandby)
        let first = try await active.keys()
        #expect(try await standby.keys() == first)
        #expect(first.published == [first.signing])

        let rotated = try await active.signer.rotate()
        #expect(try await standby.keys().signing == first.signing)  // stale until it reloads
        try await standby.signer.load()
        let taken = try await standby.keys()
        #expect(taken.signing == rotated && taken.published == [first.signing, rotated].sorted())
    }
}
