import AtlassianClient
import Foundation
import Testing

/// ATLASSIAN.md §2 (`/me`) and §1.6 (accessible resources).
@Suite("Profile and resources against the sandbox")
struct ProfileTests {
    @Test("/me returns every documented field, snake_case, typed")
    func meFields() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("5b10ac8d82e05b22cc7d4ef5", extra: [
                "name": "Ada Lovelace", "email": "ada@example.com", "nickname": "ada",
                "picture": "https://avatars.example.com/ada.png", "zoneinfo": "Europe/London", "locale": "en-GB",
                "extendedProfile": ["job_title": "Engineer", "organization": "Example Ltd"],
            ])
            let tokens = try await sandbox.signIn("5b10ac8d82e05b22cc7d4ef5")
            let profile = try await sandbox.client.me(accessToken: tokens.accessToken)
            #expect(profile.accountId == "5b10ac8d82e05b22cc7d4ef5")
            #expect(profile.accountType == "atlassian")
            #expect(profile.email == "ada@example.com")
            #expect(profile.emailVerified == true)
            #expect(profile.name == "Ada Lovelace")
            #expect(profile.nickname == "ada")
            #expect(profile.picture == "https://avatars.example.com/ada.png")
            #expect(profile.accountStatus == "active")
            #expect(profile.zoneinfo == "Europe/London")
            #expect(profile.locale == "en-GB")
            #expect(profile.extendedProfile == .init(jobTitle: "Engineer", organization: "Example Ltd"))
            #expect(profile.lastUpdatedDate != nil)
            // The description never carries personal data.
            #expect(!profile.description.contains("ada@example.com"))
            #expect(!profile.description.contains("Lovelace"))
        }
    }

    @Test("/me with a token whose consent lacks read:me is 403 → forbidden")
    func meForbiddenWithoutReadMe() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let tokens = try await sandbox.signIn("ada", scopes: ["offline_access", "report:personal-data"])
            await expectAtlassianError(.forbidden) { try await sandbox.client.me(accessToken: tokens.accessToken) }
        }
    }

    @Test("/me without a valid bearer token is 401 → unauthorized")
    func meUnauthorized() async throws {
        try await Sandbox.run { sandbox in
            await expectAtlassianError(.unauthorized) { try await sandbox.client.me(accessToken: "not-a-token") }
            let raw = try await sandbox.raw(.GET, "/me")
            #expect(raw.status == 401)
        }
    }

    @Test("the profile decoder ignores unknown fields and tolerates missing or mistyped optional ones")
    func tolerantDecoding() throws {
        let json = #"""
        {"account_id":"abc:123","name":"N","email_verified":"yes","extended_profile":{"job_title":7},
         "brand_new_field":{"x":1},"account_status":null}
        """#
        let profile = try JSONDecoder().decode(AtlassianProfile.self, from: Data(json.utf8))
        #expect(profile.accountId == "abc:123")
        #expect(profile.name == "N")
        #expect(profile.emailVerified == nil)
        #expect(profile.extendedProfile?.jobTitle == nil)
        #expect(profile.accountStatus == nil)
        #expect(profile.email == nil)
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(AtlassianProfile.self, from: Data(#"{"name":"no id"}"#.utf8))
        }
    }

    @Test("accessible resources: the user's sites, or an empty array")
    func accessibleResources() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada", extra: ["resources": [[
                "id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "url": "https://your-domain.atlassian.net",
                "name": "your-domain", "scopes": ["read:jira-work"], "avatarUrl": "https://example.com/flag.png",
            ]]])
            try await sandbox.addUser("bob")
            let ada = try await sandbox.signIn("ada")
            let resources = try await sandbox.client.accessibleResources(accessToken: ada.accessToken)
            #expect(resources == [AccessibleResource(
                id: "1324a887-45db-1bf4-1e99-ef0ff456d421", url: "https://your-domain.atlassian.net",
                name: "your-domain", scopes: ["read:jira-work"], avatarUrl: "https://example.com/flag.png")])
            let bob = try await sandbox.signIn("bob")
            #expect(try await sandbox.client.accessibleResources(accessToken: bob.accessToken).isEmpty)
            await expectAtlassianError(.unauthorized) {
                try await sandbox.client.accessibleResources(accessToken: "nope")
            }
        }
    }
}
