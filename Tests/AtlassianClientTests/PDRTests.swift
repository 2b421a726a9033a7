import Contracts
import AtlassianClient
import Foundation
import Testing
@testable import atlassian_sandbox

/// ATLASSIAN.md §3: `POST /app/report-accounts/`, one test per row of §3.4 plus the limits of §3.2 and §3.5.
@Suite("Personal Data Reporting against the sandbox")
struct PDRTests {
    static let old = Date(timeIntervalSince1970: 1_700_000_000)

    /// A signed-in reporting token for the test app.
    static func reportingToken(_ sandbox: Sandbox) async throws -> String {
        try await sandbox.addUser("owner")
        return try await sandbox.signIn("owner").accessToken
    }

    @Test("200 lists closed and updated only for accounts that were sent; Atlassian's test ids behave as documented")
    func needsActionOnlyForSentAccounts() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            for id in ["closed1", "updated1", "fresh1", "updatedNotSent", "closedNotSent"] { try await sandbox.addUser(id) }
            try await sandbox.control("/users/closed1/close")
            try await sandbox.control("/users/closedNotSent/close")
            let fetchedAt = Date().addingTimeInterval(60) // after every profile's creation
            try await sandbox.advanceClock(seconds: 1800) // less than the access token's hour
            try await sandbox.control("/users/updated1/update", ["name": "New name"])
            try await sandbox.control("/users/updatedNotSent/update", ["name": "Other"])

            let result = try await sandbox.client.reportAccounts([
                .init(accountId: "closed1", updatedAt: fetchedAt),
                .init(accountId: "updated1", updatedAt: fetchedAt),
                .init(accountId: "fresh1", updatedAt: fetchedAt),
                .init(accountId: SandboxState.testClosedAccountId, updatedAt: Self.old),
                .init(accountId: SandboxState.testActiveAccountId, updatedAt: Self.old),
            ], accessToken: token)
            guard case .needsAction(let actions) = result.outcome else {
                Issue.record("expected needsAction, got \(result.outcome)")
                return
            }
            #expect(Set(actions) == [
                AccountAction(accountId: "closed1", status: .closed),
                AccountAction(accountId: "updated1", status: .updated),
                AccountAction(accountId: SandboxState.testClosedAccountId, status: .closed),
            ])
            #expect(result.cyclePeriod == .seconds(604_800))
        }
    }

    @Test("204 when nothing needs action → nothingToDo")
    func nothingToDo() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            let result = try await sandbox.client.reportAccounts(
                [.init(accountId: SandboxState.testActiveAccountId, updatedAt: Self.old),
                 .init(accountId: "owner", updatedAt: Date().addingTimeInterval(60))],
                accessToken: token)
            #expect(result == PDRResult(outcome: .nothingToDo, cyclePeriod: .seconds(604_800)))
            let calls = try await sandbox.calls(clientId: sandbox.app.clientId)
            #expect(calls.map(\.status) == [204])
            #expect(calls.first?.accounts.map(\.accountId) == [SandboxState.testActiveAccountId, "owner"])
        }
    }

    @Test("400 with errorType and errorMessage → badRequest; a bad RFC 3339 updatedAt is refused")
    func badRequest() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            await expectAtlassianError(.badRequest(
                errorType: "INVALID_REQUEST", errorMessage: "accounts[0].accountId is missing or invalid")) {
                try await sandbox.client.reportAccounts([.init(accountId: "unknown", updatedAt: Self.old)],
                                                        accessToken: token)
            }
            let raw = try await sandbox.raw(
                .POST, "/app/report-accounts/",
                json: ["accounts": [["accountId": "abc", "updatedAt": "2024-06-01 09:30"]]], bearer: token)
            #expect(raw.status == 400)
            #expect(try raw.json()["errorType"] as? String == "INVALID_REQUEST")
            #expect(try raw.json()["errorMessage"] as? String == "accounts[0].updatedAt is not an RFC 3339 date-time")
        }
    }

    @Test("401 without a token, or with a token of a revoked grant → unauthorized")
    func unauthorized() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            let account = [ReportedAccount(accountId: "abc", updatedAt: Self.old)]
            await expectAtlassianError(.unauthorized) {
                try await sandbox.client.reportAccounts(account, accessToken: "garbage")
            }
            try await sandbox.control("/grants/revoke", ["clientId": sandbox.app.clientId, "accountId": "owner"])
            await expectAtlassianError(.unauthorized) {
                try await sandbox.client.reportAccounts(account, accessToken: token)
            }
            let raw = try await sandbox.raw(.POST, "/app/report-accounts/", json: ["accounts": []])
            #expect(raw.status == 401)
        }
    }

    @Test("403 for a token whose consent lacks report:personal-data → forbidden; the same user with the scope reports")
    func forbiddenWithoutReportingScope() async throws {
        try await Sandbox.run { sandbox in
            try await sandbox.addUser("early")
            let without = try await sandbox.signIn("early", scopes: ["read:me", "offline_access"])
            let account = [ReportedAccount(accountId: "abc", updatedAt: Self.old)]
            await expectAtlassianError(.forbidden) {
                try await sandbox.client.reportAccounts(account, accessToken: without.accessToken)
            }
            #expect(try await sandbox.calls().last?.status == 403)
            let with = try await sandbox.signIn("early")
            let result = try await sandbox.client.reportAccounts(account, accessToken: with.accessToken)
            #expect(result.outcome == .nothingToDo)
        }
    }

    @Test("the per-app rate limit answers 429 with Retry-After in seconds → rateLimited(retryAfter:)")
    func rateLimitSeconds() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            try await sandbox.settings(["rateLimitRequests": 2, "rateLimitWindowSeconds": 60])
            let account = [ReportedAccount(accountId: "abc", updatedAt: Self.old)]
            _ = try await sandbox.client.reportAccounts(account, accessToken: token)
            _ = try await sandbox.client.reportAccounts(account, accessToken: token)
            // What is left of the 60 s window opened by the first call: 60 unless a second passed since (a loaded box).
            let limited = await atlassianError { try await sandbox.client.reportAccounts(account, accessToken: token) }
            guard case .rateLimited(let retryAfter?)? = limited else {
                Issue.record("expected rateLimited, got \(String(describing: limited))")
                return
            }
            #expect((.seconds(55) ... .seconds(60)).contains(retryAfter), "\(retryAfter)")
            // The window passes on the sandbox clock; the app may report again.
            try await sandbox.advanceClock(seconds: 61)
            _ = try await sandbox.client.reportAccounts(account, accessToken: token)
            #expect(try await sandbox.calls(clientId: sandbox.app.clientId).map(\.status) == [204, 204, 429, 204])
        }
    }

    @Test("Retry-After as an HTTP date is read as the time until that date")
    func retryAfterHTTPDate() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            try await sandbox.faults(["endpoint": "report-accounts", "script": [
                ["kind": "429", "retryAfter": 30, "retryAfterFormat": "http-date"],
            ]])
            let error = await atlassianError {
                try await sandbox.client.reportAccounts([.init(accountId: "abc", updatedAt: Self.old)], accessToken: token)
            }
            guard case .rateLimited(let retryAfter?)? = error else {
                Issue.record("expected rateLimited with a delay, got \(String(describing: error))")
                return
            }
            // One-second resolution of HTTP dates, plus the time the request took.
            #expect(retryAfter >= .seconds(27) && retryAfter <= .seconds(31))
        }
    }

    @Test("500 and 503 → server(status); each faulted request is in the call log")
    func serverErrors() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            try await sandbox.faults(["script": [["kind": "500"], ["kind": "503"]]])
            let account = [ReportedAccount(accountId: "abc", updatedAt: Self.old)]
            await expectAtlassianError(.server(status: 500)) {
                try await sandbox.client.reportAccounts(account, accessToken: token)
            }
            await expectAtlassianError(.server(status: 503)) {
                try await sandbox.client.reportAccounts(account, accessToken: token)
            }
            _ = try await sandbox.client.reportAccounts(account, accessToken: token) // script used up
            let calls = try await sandbox.calls(clientId: sandbox.app.clientId)
            #expect(calls.map(\.status) == [500, 503, 204])
            #expect(calls.map(\.fault) == ["500", "503", nil])
        }
    }

    @Test("a dropped connection and a response slower than the timeout → transport")
    func transportFailures() async throws {
        try await Sandbox.run(requestTimeout: .milliseconds(500)) { sandbox in
            let token = try await Self.reportingToken(sandbox)
            let account = [ReportedAccount(accountId: "abc", updatedAt: Self.old)]
            try await sandbox.faults(["script": [["kind": "drop"], ["kind": "latency", "latencyMs": 2000]]])
            let dropped = await atlassianError { try await sandbox.client.reportAccounts(account, accessToken: token) }
            guard case .transport? = dropped else {
                Issue.record("expected transport, got \(String(describing: dropped))")
                return
            }
            await expectAtlassianError(.transport("timed out")) {
                try await sandbox.client.reportAccounts(account, accessToken: token)
            }
            #expect(try await sandbox.calls(clientId: sandbox.app.clientId).first?.status == 0)
        }
    }

    @Test("random faults by probability: probability 1 always fires, and the call log records it")
    func probabilisticFaults() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            try await sandbox.faults(["random": [["probability": 1.0, "fault": ["kind": "503"]]]])
            for _ in 0..<3 {
                await expectAtlassianError(.server(status: 503)) {
                    try await sandbox.client.reportAccounts([.init(accountId: "abc", updatedAt: Self.old)],
                                                            accessToken: token)
                }
            }
            let bad = try await sandbox.raw(.POST, "/_sandbox/faults", json: ["random": [["probability": 2, "fault": ["kind": "503"]]]])
            #expect(bad.status == 400)
        }
    }

    @Test("90 accounts are accepted; 91 are refused by the client before sending, and by the sandbox if sent raw")
    func ninetyAccountLimit() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            let ninety = (0..<90).map { ReportedAccount(accountId: "acc-\($0)", updatedAt: Self.old) }
            let accepted = try await sandbox.client.reportAccounts(ninety, accessToken: token)
            #expect(accepted.outcome == .nothingToDo)

            let ninetyOne = ninety + [ReportedAccount(accountId: "acc-90", updatedAt: Self.old)]
            await expectAtlassianError(.tooManyAccounts(count: 91, limit: 90)) {
                try await sandbox.client.reportAccounts(ninetyOne, accessToken: token)
            }
            // Nothing reached the sandbox: the log holds only the 90-account call.
            var calls = try await sandbox.calls(clientId: sandbox.app.clientId)
            #expect(calls.map(\.accounts.count) == [90])

            let raw = try await sandbox.raw(.POST, "/app/report-accounts/", json: ["accounts": ninetyOne.map {
                ["accountId": $0.accountId, "updatedAt": "2024-06-01T09:30:00.000Z"]
            }], bearer: token)
            #expect(raw.status == 400)
            #expect(try raw.json()["errorType"] as? String == "INVALID_REQUEST")
            calls = try await sandbox.calls(clientId: sandbox.app.clientId)
            #expect(calls.map(\.status) == [204, 400])
            #expect(calls.last?.accounts.count == 91)
        }
    }

    @Test("Cycle-Period is read in seconds and as ISO-8601; garbage and absence give nil", arguments: [
        (["cyclePeriodFormat": "seconds", "cyclePeriodSeconds": 1_209_600], Duration?.some(.seconds(1_209_600))),
        (["cyclePeriodFormat": "iso", "cyclePeriodSeconds": 604_800], Duration?.some(.seconds(604_800))), // P7D
        (["cyclePeriodFormat": "iso", "cyclePeriodSeconds": 3_600], Duration?.some(.seconds(3_600))), // PT3600S
        (["cyclePeriodFormat": "raw", "cyclePeriodRaw": "every week"], Duration?.none),
        (["cyclePeriodFormat": "none"], Duration?.none),
    ] as [([String: any Sendable], Duration?)])
    func cyclePeriod(settings: [String: any Sendable], expected: Duration?) async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            try await sandbox.settings(settings)
            for _ in 0..<2 { // the garbage value is logged once, not per call; both calls still succeed
                let result = try await sandbox.client.reportAccounts(
                    [.init(accountId: SandboxState.testClosedAccountId, updatedAt: Self.old)], accessToken: token)
                #expect(result.cyclePeriod == expected)
                #expect(result.outcome == .needsAction([.init(accountId: SandboxState.testClosedAccountId, status: .closed)]))
            }
        }
    }

    @Test("the call log is per app: accounts, status and time of each request")
    func callLogPerApp() async throws {
        try await Sandbox.run { sandbox in
            let token = try await Self.reportingToken(sandbox)
            let other = AtlassianAppCredentials(clientId: "other-app", clientSecret: "other-secret-0123456789",
                                                redirectURI: "https://other.example.com/cb")
            try await sandbox.registerApp(other)
            let otherToken = try await sandbox.signIn("owner", app: other).accessToken
            _ = try await sandbox.client.reportAccounts([.init(accountId: "a1", updatedAt: Self.old)], accessToken: token)
            _ = try await sandbox.client.reportAccounts([.init(accountId: "b1", updatedAt: Self.old)], accessToken: otherToken)
            let mine = try await sandbox.calls(clientId: sandbox.app.clientId)
            #expect(mine.map { $0.accounts.map(\.accountId) } == [["a1"]])
            #expect(mine.first?.accounts.first?.updatedAt == "2023-11-14T22:13:20.000Z")
            #expect(mine.first.map { RFC3339.date(from: $0.time) != nil } == true)
            #expect(try await sandbox.calls(clientId: "other-app").map { $0.accounts.map(\.accountId) } == [["b1"]])
            #expect(try await sandbox.calls().count == 2)
        }
    }
}
