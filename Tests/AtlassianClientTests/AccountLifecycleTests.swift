import AtlassianClient
import Contracts
import Foundation
import ServiceKit
import Testing
@testable import atlassian_sandbox

/// ATLASSIAN.md "Read first" and §2: a deleted account has a grace period (14 days) before apps get `closed` from
/// PDR; meanwhile it cannot sign in and its grants stop working. The sandbox's `delete` follows that; `close` stays
/// the immediate close that skips it.
@Suite("Account lifecycle: deletion, grace period, closed")
struct AccountLifecycleTests {
    static let day: Double = 86_400
    static let grace: Double = 14 * day

    /// The control API's view of a user.
    static func status(_ sandbox: Sandbox, _ accountId: String) async throws -> [String: Any] {
        let response = try await sandbox.raw(.GET, "/_sandbox/users/\(accountId)")
        #expect(response.status == 200)
        return try response.json()
    }

    @Test("delete answers deleting with closesAt 14 days on by default; the account cannot sign in, old codes and refresh tokens fail invalid_grant, its access tokens answer 401")
    func graceCutsAccess() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("ada")
            let tokens = try await sandbox.signIn("ada")
            let refreshToken = try #require(tokens.refreshToken)
            // A code obtained before the deletion and exchanged after it.
            let earlyCode = try await OAuthTests.code(sandbox, for: "ada")

            let deleted = try await sandbox.control("/users/ada/delete").json()
            #expect(deleted["accountId"] as? String == "ada")
            #expect(deleted["status"] as? String == "deleting")
            let deletedAt = try #require(RFC3339.date(from: deleted["deletedAt"] as? String ?? ""))
            let closesAt = try #require(RFC3339.date(from: deleted["closesAt"] as? String ?? ""))
            #expect(abs(closesAt.timeIntervalSince(deletedAt) - Self.grace) < 0.01)
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "deleting")

            // Sign-in is denied like a closed account's, and no code is issued.
            let url = sandbox.client.authorizeURL(
                clientId: sandbox.app.clientId, redirectURI: sandbox.app.redirectURI, scopes: Sandbox.scopes,
                state: "s1")
            let answer = try await sandbox.authorize(URL(string: url.absoluteString + "&sandbox_user=ada")!)
            #expect(answer.status == 302)
            #expect(answer.location["error"] == "access_denied")
            #expect(answer.location["state"] == "s1")
            #expect(answer.location["code"] == nil)

            await expectAtlassianError(.oauth(.invalidGrant, description: "Invalid authorization code", status: 403)) {
                try await sandbox.client.exchangeCode(earlyCode, credentials: sandbox.app)
            }
            let refreshError = await atlassianError {
                try await sandbox.client.refresh(refreshToken: refreshToken, credentials: sandbox.app)
            }
            guard case .oauth(.invalidGrant, _, 403)? = refreshError else {
                Issue.record("expected 403 invalid_grant, got \(String(describing: refreshError))")
                return
            }
            // Its grants stop working: the access token is refused by /me and by PDR.
            await expectAtlassianError(.unauthorized) { try await sandbox.client.me(accessToken: tokens.accessToken) }
            await expectAtlassianError(.unauthorized) {
                try await sandbox.client.reportAccounts(
                    [.init(accountId: "ada", updatedAt: Date())], accessToken: tokens.accessToken)
            }
            // Still inside the grace period after 13 days: still deleting, still no sign-in.
            try await sandbox.advanceClock(seconds: 13 * Self.day)
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "deleting")
            let later = try await sandbox.authorize(URL(string: url.absoluteString + "&sandbox_user=ada")!)
            #expect(later.location["error"] == "access_denied")
        }
    }

    @Test("PDR about a deleting account answers 204, or updated after a profile change, never closed; closed once the sandbox clock passes the grace period")
    func pdrDuringAndAfterGrace() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("owner")
            try await sandbox.addUser("ada")
            let owner = try await sandbox.signIn("owner")
            var ownerRefresh = try #require(owner.refreshToken)
            var ownerToken = owner.accessToken
            // The owner's access token lives an hour; the test jumps days, so it refreshes before each report.
            func report(_ updatedAt: Date) async throws -> PDROutcome {
                let fresh = try await sandbox.client.refresh(refreshToken: ownerRefresh, credentials: sandbox.app)
                ownerRefresh = try #require(fresh.refreshToken)
                ownerToken = fresh.accessToken
                return try await sandbox.client.reportAccounts(
                    [.init(accountId: "ada", updatedAt: updatedAt)], accessToken: ownerToken).outcome
            }
            let fetchedAt = Date().addingTimeInterval(60) // after ada's profile was created

            try await sandbox.control("/users/ada/delete")
            #expect(try await report(fetchedAt) == .nothingToDo)
            #expect(try await sandbox.calls(clientId: sandbox.app.clientId).last?.status == 204)

            try await sandbox.advanceClock(seconds: 13 * Self.day)
            #expect(try await report(fetchedAt) == .nothingToDo)

            // A profile change inside the grace period is `updated`, as for any account — not `closed`.
            try await sandbox.control("/users/ada/update", ["name": "Ada King"])
            #expect(try await report(fetchedAt) == .needsAction([AccountAction(accountId: "ada", status: .updated)]))
            #expect(try await report(Date().addingTimeInterval(14 * Self.day)) == .nothingToDo)

            // A minute before the end of the grace period: still not closed.
            try await sandbox.advanceClock(seconds: Self.day - 60)
            #expect(try await report(fetchedAt) == .needsAction([AccountAction(accountId: "ada", status: .updated)]))
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "deleting")

            try await sandbox.advanceClock(seconds: 61)
            #expect(try await report(fetchedAt) == .needsAction([AccountAction(accountId: "ada", status: .closed)]))
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "closed")
            // Closed wins over a newer updatedAt, and sign-in is now refused as closed.
            #expect(try await report(Date().addingTimeInterval(30 * Self.day))
                == .needsAction([AccountAction(accountId: "ada", status: .closed)]))
            let url = sandbox.client.authorizeURL(
                clientId: sandbox.app.clientId, redirectURI: sandbox.app.redirectURI, scopes: Sandbox.scopes,
                state: "s")
            let answer = try await sandbox.authorize(URL(string: url.absoluteString + "&sandbox_user=ada")!)
            #expect(answer.location["error"] == "access_denied")
            #expect(answer.location["error_description"] == "The account is closed")
        }
    }

    @Test("deleting twice does not restart the grace period; close skips it, also for a deleting account; unknown ids are 404")
    func deleteIdempotentCloseImmediate() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("owner")
            try await sandbox.addUser("ada")
            try await sandbox.addUser("bob")
            let token = try await sandbox.signIn("owner").accessToken
            let first = try await sandbox.control("/users/ada/delete").json()
            try await sandbox.advanceClock(seconds: 60)
            let second = try await sandbox.control("/users/ada/delete").json()
            #expect(second["closesAt"] as? String == first["closesAt"] as? String)
            #expect(second["deletedAt"] as? String == first["deletedAt"] as? String)

            // /close keeps today's meaning: closed at once, grace or no grace.
            let closed = try await sandbox.control("/users/ada/close").json()
            #expect(closed["closed"] as? Bool == true)
            #expect(closed["status"] as? String == "closed")
            try await sandbox.control("/users/bob/close")
            let outcome = try await sandbox.client.reportAccounts(
                [.init(accountId: "ada", updatedAt: Date().addingTimeInterval(3600)),
                 .init(accountId: "bob", updatedAt: Date().addingTimeInterval(3600))],
                accessToken: token).outcome
            guard case .needsAction(let actions) = outcome else {
                Issue.record("expected needsAction, got \(outcome)")
                return
            }
            #expect(Set(actions) == [AccountAction(accountId: "ada", status: .closed),
                                     AccountAction(accountId: "bob", status: .closed)])
            #expect(try await Self.status(sandbox, "bob")["status"] as? String == "closed")
            #expect(try await Self.status(sandbox, "owner")["status"] as? String == "active")
            #expect(try await Self.status(sandbox, "owner")["closesAt"] == nil)

            #expect(try await sandbox.raw(.POST, "/_sandbox/users/nobody/delete").status == 404)
            #expect(try await sandbox.raw(.GET, "/_sandbox/users/nobody").status == 404)
        }
    }

    @Test("the grace period is a run-time setting: seconds for tests, 0 closes at once, fixed per account at deletion; bad values are a 400 with a reason; reset restores the configured value")
    func graceSetting() async throws {
        try await Sandbox.run { sandbox in
            let initial = try await sandbox.raw(.GET, "/_sandbox/settings").json()
            #expect(initial["deletionGraceSeconds"] as? Int == 1_209_600)

            try await sandbox.settings(["deletionGraceSeconds": 5])
            #expect(try await sandbox.raw(.GET, "/_sandbox/settings").json()["deletionGraceSeconds"] as? Int == 5)
            try await sandbox.addUser("owner")
            try await sandbox.addUser("ada")
            try await sandbox.addUser("zed")
            let token = try await sandbox.signIn("owner").accessToken
            let deleted = try await sandbox.control("/users/ada/delete").json()
            let deletedAt = try #require(RFC3339.date(from: deleted["deletedAt"] as? String ?? ""))
            let closesAt = try #require(RFC3339.date(from: deleted["closesAt"] as? String ?? ""))
            #expect(abs(closesAt.timeIntervalSince(deletedAt) - 5) < 0.01)
            // Changing the setting later does not move an account already being deleted.
            try await sandbox.settings(["deletionGraceSeconds": 3600])
            let fetchedAt = Date().addingTimeInterval(60)
            #expect(try await sandbox.client.reportAccounts(
                [.init(accountId: "ada", updatedAt: fetchedAt)], accessToken: token).outcome == .nothingToDo)
            try await sandbox.advanceClock(seconds: 6)
            #expect(try await sandbox.client.reportAccounts(
                [.init(accountId: "ada", updatedAt: fetchedAt)], accessToken: token).outcome
                == .needsAction([AccountAction(accountId: "ada", status: .closed)]))

            try await sandbox.settings(["deletionGraceSeconds": 0])
            #expect(try await sandbox.control("/users/zed/delete").json()["status"] as? String == "closed")

            for (bad, reason) in [
                (-1 as Any, "deletionGraceSeconds must be between 0 and 31622400, got -1"),
                (31_622_401 as Any, "deletionGraceSeconds must be between 0 and 31622400, got 31622401"),
                ("14d" as Any, "field deletionGraceSeconds has the wrong type"),
            ] {
                let response = try await sandbox.raw(.POST, "/_sandbox/settings", json: ["deletionGraceSeconds": bad])
                #expect(response.status == 400)
                #expect(try response.json()["reason"] as? String == reason)
            }
            #expect(try await sandbox.raw(.GET, "/_sandbox/settings").json()["deletionGraceSeconds"] as? Int == 0)

            try await sandbox.control("/reset")
            #expect(try await sandbox.raw(.GET, "/_sandbox/settings").json()["deletionGraceSeconds"] as? Int
                == 1_209_600)
        }
    }

    @Test("a sandbox configured with a short grace period starts with it")
    func configuredGraceIsInitial() async throws {
        var settings = SandboxSettings()
        settings.deletionGraceSeconds = 30
        try await Sandbox.run(settings: settings) { sandbox in
            #expect(try await sandbox.raw(.GET, "/_sandbox/settings").json()["deletionGraceSeconds"] as? Int == 30)
            try await sandbox.addUser("ada")
            try await sandbox.control("/users/ada/delete")
            // The sandbox's clock is the real one plus the advances: 5 s of margin for a loaded machine (29 s failed
            // once under the full suite), then past the 30 s.
            try await sandbox.advanceClock(seconds: 25)
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "deleting")
            try await sandbox.advanceClock(seconds: 6)
            #expect(try await Self.status(sandbox, "ada")["status"] as? String == "closed")
        }
    }

    @Test("SANDBOX_DELETION_GRACE_SECONDS: 14 days by default, seconds when set, a bad value names the variable")
    func graceConfiguration() throws {
        #expect(try SandboxConfig(reader: ConfigReader(environment: [:])).settings.deletionGraceSeconds == 1_209_600)
        #expect(try SandboxConfig(reader: ConfigReader(environment: ["SANDBOX_DELETION_GRACE_SECONDS": "5"]))
            .settings.deletionGraceSeconds == 5)
        #expect(try SandboxConfig(reader: ConfigReader(environment: ["SANDBOX_DELETION_GRACE_SECONDS": "0"]))
            .settings.deletionGraceSeconds == 0)
        for (bad, reason) in [("14d", "must be an integer"), ("-1", "must be between 0 and 31622400"),
                              ("31622401", "must be between 0 and 31622400")] {
            #expect(throws: ConfigError(variable: "SANDBOX_DELETION_GRACE_SECONDS", reason: reason)) {
                try SandboxConfig(reader: ConfigReader(environment: ["SANDBOX_DELETION_GRACE_SECONDS": bad]))
            }
        }
    }
}
