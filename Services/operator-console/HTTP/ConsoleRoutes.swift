import AsyncHTTPClient
import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceKit

/// What the console's routes need: the services it asks, the broker, and the operator's session.
struct Console: Sendable {
    let apis: ServiceAPIs
    let deadLetters: DeadLetterDepths
    let session: ConsoleSession
    let admin: BearerSecret
    let secureCookie: Bool
    /// Sign-in attempts per client address: the operator token must not be guessable through the form.
    let signInLimiter = RateLimiter(perMinute: 10, burst: 10)
    let logger: Logger

    /// Everything the overview shows, asked of every source at once.
    func snapshot() async -> ConsoleSnapshot {
        async let tenants = apis.tenants()
        async let streams = apis.streams()
        async let reporting = apis.reporting()
        async let counts = apis.counts()
        async let open = apis.openErasures()
        async let participants = apis.participants()
        async let audit = apis.audit()
        async let depths = deadLetters.depths()
        let (apps, reporters) = await reporting
        return ConsoleSnapshot(
            takenAt: Date(), tenants: await tenants, streams: await streams, apps: apps, reporters: reporters,
            counts: await counts, openErasures: await open, participants: await participants, audit: await audit,
            deadLetters: await depths)
    }
}

/// The console's routes (port 8084). Every page but the sign-in needs a session; every form that changes something
/// carries the session's CSRF token. Pages are `no-store` and framed by no one.
enum ConsoleRoutes {
    static func add(to router: Router<LetheRequestContext>, console: Console) {
        router.get("/console.css") { _, _ in asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
        router.get("/console.js") { _, _ in asset(ConsoleAssets.javascript, type: "text/javascript; charset=utf-8") }

        addSessionRoutes(to: router, console: console)

        router.get("/") { request, _ -> Response in
            guard let session = signedIn(request, console) else { return redirect("/login") }
            let snapshot = await console.snapshot()
            return page(
                ConsolePage.overview(
                    snapshot, csrf: console.session.csrfToken(for: session), flash: flash(request, console)))
        }

        router.get("/erasures/:id") { request, context -> Response in
            guard let session = signedIn(request, console) else { return redirect("/login") }
            let id = try context.parameters.require("id")
            let erasure = await console.apis.erasure(id)
            return page(
                ConsolePage.erasure(
                    erasure, id: id, csrf: console.session.csrfToken(for: session), flash: flash(request, console)))
        }

        addActionRoutes(to: router, console: console)
        router.get("/audit/export") { request, _ -> Response in
            guard signedIn(request, console) != nil else { return redirect("/login") }
            let upstream: HTTPClientResponse
            do {
                upstream = try await console.apis.auditExport()
            } catch {
                throw HTTPError(.badGateway, message: "the audit export is unavailable: \(error)")
            }
            let stamp = Int(Date().timeIntervalSince1970)
            return Response(
                status: .ok,
                headers: [
                    .contentType: "application/x-ndjson", .cacheControl: "no-store",
                    .contentDisposition: "attachment; filename=\"lethe-audit-\(stamp).jsonl\"",
                ],
                body: ResponseBody(asyncSequence: upstream.body))
        }
    }

    /// Signing in with the operator token (limited per address) and out.
    static func addSessionRoutes(to router: Router<LetheRequestContext>, console: Console) {
        router.get("/login") { request, _ -> Response in
            if console.session.isValid(sessionCookie(request)) { return redirect("/") }
            return page(ConsolePage.signIn(problem: nil))
        }

        router.post("/login") { request, context -> Response in
            let client = context.remoteAddress?.ipAddress ?? "local"
            if let wait = console.signInLimiter.take(client) {
                var response = page(
                    ConsolePage.signIn(problem: "Too many attempts; try again in \(wait) s."), status: .tooManyRequests)
                response.headers[.retryAfter] = "\(wait)"
                return response
            }
            let form = try await form(request)
            guard let token = form["token"], console.admin.matches(token) else {
                console.logger.warning("console sign-in refused: wrong operator token")
                return page(ConsolePage.signIn(problem: "That is not the operator token."), status: .unauthorized)
            }
            console.logger.notice("operator signed in to the console")
            var response = redirect("/")
            response.setCookie(cookie(console.session.issue(), maxAge: Int(console.session.lifetime), console))
            return response
        }

        router.post("/logout") { request, _ -> Response in
            _ = try await signedInForm(request, console)
            var response = redirect("/login")
            response.setCookie(cookie("", maxAge: 0, console))
            return response
        }
    }

    /// The operator's actions, each a form posted with the session's CSRF token: retry an erasure, waive one
    /// participant of one erasure, retire a participant.
    static func addActionRoutes(to router: Router<LetheRequestContext>, console: Console) {
        router.post("/erasures/:id/retry") { request, context -> Response in
            _ = try await signedInForm(request, console)
            let id = try context.parameters.require("id")
            let path = "/erasures/\(ServiceAPIs.pathSegment(id))"
            if let problem = await console.apis.retry(erasure: id) {
                return redirect(path, flash: .init(ok: false, message: "Retry refused: \(problem)"), console)
            }
            console.logger.notice("operator retried an erasure from the console", metadata: ["erasure": "\(id)"])
            return redirect(
                path, flash: .init(ok: true, message: "Sent again to every participant still to acknowledge."), console)
        }

        router.post("/erasures/:id/waive") { request, context -> Response in
            let form = try await signedInForm(request, console)
            let id = try context.parameters.require("id")
            let participant = form["participant"] ?? ""
            let path = "/erasures/\(ServiceAPIs.pathSegment(id))"
            if let problem = await console.apis.waive(
                erasure: id, participant: participant, reason: form["reason"] ?? "")
            {
                return redirect(
                    path, flash: .init(ok: false, message: "Waiving \(participant) refused: \(problem)"), console)
            }
            console.logger.notice(
                "operator waived a participant of an erasure from the console",
                metadata: ["erasure": "\(id)", "participant": "\(participant)"])
            return redirect(path, flash: .init(ok: true, message: "\(participant) waived in this erasure."), console)
        }

        router.post("/participants/:participant/retire") { request, context -> Response in
            let form = try await signedInForm(request, console)
            let participant = try context.parameters.require("participant")
            let reason = form["reason"] ?? ""
            if let problem = await console.apis.retire(participant: participant, reason: reason) {
                return redirect(
                    "/", flash: .init(ok: false, message: "Retiring \(participant) refused: \(problem)"), console)
            }
            console.logger.notice(
                "operator retired a participant from the console", metadata: ["participant": "\(participant)"])
            return redirect("/", flash: .init(ok: true, message: "\(participant) retired."), console)
        }
    }

    // MARK: Session

    /// The session cookie's value when it is a valid session.
    static func signedIn(_ request: Request, _ console: Console) -> String? {
        let value = sessionCookie(request)
        return console.session.isValid(value) ? value : nil
    }

    /// The posted form of a signed-in operator whose form carries the session's CSRF token; 403 otherwise.
    static func signedInForm(_ request: Request, _ console: Console) async throws -> FormFields {
        guard let session = signedIn(request, console) else {
            throw HTTPError(.forbidden, message: "sign in to the console first")
        }
        let fields = try await form(request)
        guard console.session.isValidCSRF(fields["csrf"], session: session) else {
            throw HTTPError(.forbidden, message: "this form is stale or not the console's; reload the page")
        }
        return fields
    }

    static func sessionCookie(_ request: Request) -> String? { request.cookies[ConsoleSession.cookieName]?.value }

    static func cookie(_ value: String, maxAge: Int, _ console: Console) -> Cookie {
        Cookie(
            name: ConsoleSession.cookieName, value: value, maxAge: maxAge, path: "/", secure: console.secureCookie,
            httpOnly: true, sameSite: .strict)
    }

    // MARK: Responses

    static func form(_ request: Request) async throws -> FormFields {
        try await FormFields(body: request, upTo: 16 * 1024)
    }

    /// The message a redirect carried, if the console signed it.
    static func flash(_ request: Request, _ console: Console) -> ConsolePage.Flash? {
        let query = FormFields(query: request)
        for (name, ok) in [("ok", true), ("error", false)] {
            if let message = query[name], console.session.isValidFlash(message, signature: query["sig"]) {
                return .init(ok: ok, message: message)
            }
        }
        return nil
    }

    /// 303 to `path` with a signed message to show there.
    static func redirect(_ path: String, flash: ConsolePage.Flash, _ console: Console) -> Response {
        let message = String(flash.message.prefix(300))
        return redirect(
            path + "?"
                + FormFields.queryString([
                    (flash.ok ? "ok" : "error", message), ("sig", console.session.flashSignature(message)),
                ]))
    }

    static let pageHeaders: HTTPFields = [
        .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
        .contentSecurityPolicy: "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        .xContentTypeOptions: "nosniff", HTTPField.Name("Referrer-Policy")!: "no-referrer",
    ]

    static func page(_ html: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: pageHeaders, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "max-age=300", .xContentTypeOptions: "nosniff"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
