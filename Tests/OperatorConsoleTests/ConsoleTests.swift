import AsyncHTTPClient
import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Messaging
import ServiceKit
import Testing

@testable import operator_console

@Suite("operator-console: sessions, merging reporters, rendering, and the sign-in gate")
struct ConsoleTests {
    static let adminToken = "operator-token-0123456789"

    @Test("a session is valid until it expires; a tampered, foreign or expired one is not; forms and flashes are bound")
    func sessions() {
        let session = ConsoleSession(adminToken: Self.adminToken, lifetime: 3600)
        let now = Date()
        let cookie = session.issue(now: now)
        #expect(session.isValid(cookie, now: now))
        #expect(!session.isValid(cookie, now: now.addingTimeInterval(3601)))
        #expect(!session.isValid(cookie + "x", now: now) && !session.isValid(nil) && !session.isValid("1.2.3"))
        // Another expiry with the same signature: the signature covers it.
        let parts = cookie.split(separator: ".")
        #expect(!session.isValid("\(Int(parts[0])! + 86_400).\(parts[1]).\(parts[2])", now: now))
        // A new operator token ends every session.
        #expect(!ConsoleSession(adminToken: "another-token-0123456789", lifetime: 3600).isValid(cookie, now: now))

        let other = session.issue(now: now)
        #expect(session.isValidCSRF(session.csrfToken(for: cookie), session: cookie))
        #expect(!session.isValidCSRF(session.csrfToken(for: other), session: cookie))
        #expect(!session.isValidCSRF(nil, session: cookie))
        #expect(session.isValidFlash("done", signature: session.flashSignature("done")))
        #expect(!session.isValidFlash("visit evil.example", signature: session.flashSignature("done")))
    }

    @Test("reporter replicas' apps are summed per app, with the worst health any replica reports")
    func mergingReporters() {
        func app(_ id: String, held: Int, reported: Int, state: String, overdue: Int = 0) -> AppReporting {
            AppReporting(
                appId: id, accountsHeld: held, dueNow: 1, reportedInCurrentCycle: reported, rejected: 0,
                cyclePeriodSeconds: 604_800, lastCallAt: nil, nextDueAt: "2026-12-0\(held % 9 + 1)T00:00:00Z",
                health: .init(
                    state: state, reason: state == "ok" ? nil : "rate-limited", since: nil, overdueAccounts: overdue))
        }
        let merged = AppReporting.merged([
            [app("b", held: 10, reported: 4, state: "ok"), app("a", held: 1, reported: 1, state: "ok")],
            [app("b", held: 5, reported: 5, state: "failing", overdue: 2)],
            [app("b", held: 1, reported: 0, state: "degraded", overdue: 1)],
        ])
        #expect(merged.map(\.appId) == ["a", "b"])
        #expect(merged[1].accountsHeld == 16 && merged[1].reportedInCurrentCycle == 9 && merged[1].dueNow == 3)
        #expect(merged[1].health.state == "failing" && merged[1].health.reason == "rate-limited")
        #expect(merged[1].health.overdueAccounts == 3)
        #expect(merged[1].nextDueAt == "2026-12-02T00:00:00Z", "the earliest of the replicas'")
    }

    @Test("the overview escapes what services say, shows each figure, and says which part is unavailable and why")
    func rendering() {
        let erasure = ErasureSummary(
            id: "e-1", tenantId: "<script>alert(1)</script>", appId: "app", subject: "abc", policy: "delete",
            cause: "atlassian-closed", status: "needs-attention", overdue: true, deadline: "2026-12-10T00:00:00Z",
            createdAt: "2026-12-03T10:00:00Z", completedAt: nil,
            participants: [
                .init(
                    participant: "billing", outcome: "failed", detail: "db down", failedAttempts: 1,
                    sends: 1, ackedAt: nil)
            ])
        let snapshot = ConsoleSnapshot(
            takenAt: Date(), tenants: .loaded([]), streams: .unavailable("gateway: no answer"), apps: .loaded([]),
            reporters: [ReporterAnswer(address: "http://r1", apps: 0, problem: nil)],
            counts: .loaded(
                ErasureCounts(pending: 0, dispatched: 0, needsAttention: 1, completed: 7, open: 1, overdue: 1)),
            openErasures: .loaded([erasure]), participants: .loaded(ParticipantsSummary(declared: [], retirements: [])),
            audit: .loaded(AuditSummary(
                ok: true, entries: 7, chains: 3, firstBrokenChain: nil, firstBrokenSequence: nil, reason: nil,
                keyId: "k")),
            deadLetters: .loaded([DeadLetterDepth(topic: "lethe.profiles.v1.dlq", records: 3)]))
        let html = ConsolePage.overview(snapshot, csrf: "token-1", flash: nil)
        #expect(!html.contains("<script>alert") && html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(html.contains(#"data-metric="erasures-needs-attention">1<"#))
        #expect(html.contains(#"data-metric="erasures-completed">7<"#))
        #expect(html.contains(#"data-metric="dead-letters">3<"#))
        #expect(html.contains(#"data-metric="audit">verified<"#) && html.contains(#"data-metric="audit-chains">3<"#))
        #expect(html.contains(#"data-erasure="e-1" data-status="needs-attention""#))
        #expect(html.contains(#"action="/erasures/e-1/retry""#) && html.contains(#"name="csrf" value="token-1""#))
        // The streams part failed: its section says so, and its tile shows "?" rather than a made-up zero.
        #expect(html.contains("Unavailable: gateway: no answer"))
        #expect(html.contains(#"data-metric="ssf-pending" class="bad""#))
        #expect(!html.contains(#"src="http"#) && !html.contains(#"href="http"#))  // no CDN: everything from the console

        // The erasure's page: Retry, and a waiver for each participant still awaited (not for one that acknowledged).
        var twoParticipants = erasure
        twoParticipants.participants.append(
            .init(
                participant: "crm", outcome: "erased", detail: nil, failedAttempts: 0, sends: 1,
                ackedAt: "2026-12-03T10:00:01Z"))
        let page = ConsolePage.erasure(.loaded(twoParticipants), id: "e-1", csrf: "token-1", flash: nil)
        #expect(
            page.contains(#"action="/erasures/e-1/waive""#) && page.contains(#"name="participant" value="billing""#))
        #expect(!page.contains(#"name="participant" value="crm""#) && page.contains(#"data-action="retry""#))
    }

    @Test("signing in: a wrong token is 401 without a cookie, the right one a session; pages need it, forms need CSRF")
    func signInGate() async throws {
        let closed = URL(string: "http://127.0.0.1:9")!  // nothing listens: every part is unavailable
        let logger = Logger(label: "console-test")
        let console = Console(
            apis: ServiceAPIs(
                client: .shared, adminToken: Self.adminToken, gateway: closed, executor: closed, reporters: [closed],
                logger: logger),
            deadLetters: DeadLetterDepths(
                admin: try KafkaAdmin(bootstrapServers: "127.0.0.1:9", logger: logger), namespace: .init(prefix: "t"),
                timeout: .milliseconds(300)),
            session: ConsoleSession(adminToken: Self.adminToken, lifetime: 600),
            admin: BearerSecret(Self.adminToken, realm: "admin token"), secureCookie: true, logger: logger)
        let router = Router(context: LetheRequestContext.self)
        ConsoleRoutes.add(to: router, console: console)
        try await Application(router: router).test(.router) { client in
            let gate = try await client.execute(uri: "/", method: .get)
            #expect(gate.status == .seeOther && gate.headers[.location] == "/login")

            let form: HTTPFields = [.contentType: "application/x-www-form-urlencoded"]
            let wrong = try await client.execute(
                uri: "/login", method: .post, headers: form, body: ByteBuffer(string: "token=guess"))
            #expect(wrong.status == .unauthorized && wrong.headers[.setCookie] == nil)

            let right = try await client.execute(
                uri: "/login", method: .post, headers: form,
                body: ByteBuffer(string: "token=" + FormFields.encode(Self.adminToken)))
            let setCookie = try #require(right.headers[.setCookie])
            #expect(
                right.status == .seeOther && setCookie.contains("HttpOnly") && setCookie.contains("SameSite=Strict"))
            #expect(setCookie.contains("; Secure"))
            let cookie = String(setCookie.split(separator: ";")[0])

            let page = try await client.execute(uri: "/", method: .get, headers: [.cookie: cookie])
            let html = String(buffer: page.body)
            #expect(page.status == .ok && page.headers[.contentSecurityPolicy]?.contains("default-src 'self'") == true)
            #expect(html.contains("Unavailable:") && html.contains(#"data-metric="tenants" class="bad""#))

            let forged = try await client.execute(
                uri: "/erasures/e-1/retry", method: .post, headers: form + [.cookie: cookie],
                body: ByteBuffer(string: "csrf=forged"))
            #expect(forged.status == .forbidden)
            let css = try await client.execute(uri: "/console.css", method: .get)
            #expect(css.status == .ok && css.headers[.contentType]?.hasPrefix("text/css") == true)
        }
    }
}

extension HTTPFields {
    fileprivate static func + (lhs: HTTPFields, rhs: HTTPFields) -> HTTPFields {
        var fields = lhs
        fields.append(contentsOf: rhs)
        return fields
    }
}
