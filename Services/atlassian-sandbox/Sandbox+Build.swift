import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceKit

/// The request context of the sandbox: the basic one plus the connection, which the `drop` fault closes to make a
/// client see a dropped connection instead of an answer.
struct SandboxRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Builds the sandbox: state, Atlassian's routes, the control API and the operational routes. All wiring lives here so
/// tests run exactly what `swift run atlassian-sandbox` runs, on their own port.
///
/// - Parameters:
///   - state: pass one to reach the state directly from a test; a fresh one by default.
///   - onServerRunning: called with the bound port once listening (tests use port 0 and learn the port here).
func buildApplication(
    config: SandboxConfig,
    logger: Logger,
    registry: PrometheusCollectorRegistry,
    state: SandboxState? = nil,
    onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let state = state ?? SandboxState(config: config)
    let router = Router(context: SandboxRequestContext.self)
    // Before the routes (it applies to those added after it); errors as thrown: the sandbox answers like Atlassian.
    router.add(middleware: RequestLogMiddleware(errorBodies: false))
    router.addOperationalRoutes(readiness: [], registry: registry)
    addAtlassianRoutes(router, state: state)
    addControlRoutes(router, state: state)
    let host = config.http.host
    return Application(
        router: router,
        configuration: config.http.applicationConfiguration(serverName: "atlassian-sandbox"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? config.http.port
            logger.info("atlassian-sandbox listening on http://\(host):\(port)")
            await onServerRunning(port)
        },
        logger: logger
    )
}

// MARK: Atlassian's endpoints (ATLASSIAN.md §1–§3)

private func addAtlassianRoutes(_ router: Router<SandboxRequestContext>, state: SandboxState) {
    router.get("/authorize") { request, _ -> Response in
        switch await state.authorize(FormFields(query: request).firstValues) {
        case .redirect(let location): return Response(status: .found, headers: [.location: location])
        case .refused(let answer): return answer.response
        }
    }

    router.post("/oauth/token") { request, context -> Response in
        let body = try await request.body.collect(upTo: 64 * 1024)
        if let fault = try await injectFault(.token, clientId: nil, state: state, context: context) {
            return fault
        }
        guard let fields = parseTokenBody(Data(buffer: body), contentType: request.headers[.contentType]) else {
            return SandboxAnswer.oauth(400, "invalid_request", "body must be JSON or application/x-www-form-urlencoded")
                .response
        }
        return await state.token(fields).response
    }

    router.get("/me") { request, context -> Response in
        let bearer = bearerToken(request)
        if let fault = try await injectFault(
            .me, clientId: await state.clientId(forBearer: bearer), state: state, context: context) {
            return fault
        }
        return await state.me(bearer: bearer).response
    }

    router.get("/oauth/token/accessible-resources") { request, context -> Response in
        let bearer = bearerToken(request)
        if let fault = try await injectFault(
            .accessibleResources, clientId: await state.clientId(forBearer: bearer), state: state, context: context) {
            return fault
        }
        return await state.accessibleResources(bearer: bearer).response
    }

    // Hummingbird's router ignores a trailing slash, so this serves both the documented `/app/report-accounts/` and
    // the `/app/report-accounts` @forge/api calls.
    do {
        router.post("/app/report-accounts/") { request, context -> Response in
            let bearer = bearerToken(request)
            let body = Data(buffer: try await request.body.collect(upTo: 1 << 20))
            let clientId = await state.clientId(forBearer: bearer)
            if let fault = try await injectFault(
                .reportAccounts, clientId: clientId, state: state, context: context, pdrBody: body) {
                return fault
            }
            return await state.reportAccounts(bearer: bearer, body: body).response
        }
    }
}

/// Thrown after the `drop` fault closed the connection: there is nobody to answer.
struct DroppedConnection: Error {}

/// Applies the next injected fault for this endpoint: latency delays and lets the request through; 429/500/503
/// answer at once; drop closes the connection. PDR faults are logged in the call log like any other PDR request.
private func injectFault(
    _ endpoint: SandboxEndpoint, clientId: String?, state: SandboxState, context: SandboxRequestContext,
    pdrBody: Data? = nil
) async throws -> Response? {
    guard let fault = await state.nextFault(endpoint: endpoint, clientId: clientId) else { return nil }
    let answer: SandboxAnswer
    switch fault.kind {
    case .latency:
        try await Task.sleep(for: .milliseconds(fault.latencyMs ?? 1000))
        return nil
    case .drop:
        if let pdrBody { await state.recordFaultedCall(clientId: clientId, body: pdrBody, status: 0, fault: fault) }
        try? await context.channel.close()
        throw DroppedConnection()
    case .tooManyRequests:
        let retryAfter = SandboxState.retryAfterValue(fault.retryAfter ?? 30, format: fault.retryAfterFormat ?? .seconds)
        answer = .json(429, ["code": 429, "message": "Too Many Requests"], headers: [("Retry-After", retryAfter)])
    case .internalError:
        answer = endpoint == .token
            ? .oauth(500, "server_error", "Internal error")
            : .pdr(500, "INTERNAL_SERVER_ERROR", "Injected fault")
    case .unavailable:
        answer = .json(503, ["code": 503, "message": "Service Unavailable"])
    }
    if let pdrBody { await state.recordFaultedCall(clientId: clientId, body: pdrBody, status: answer.status, fault: fault) }
    return answer.response
}

// MARK: Control API (docs/sandbox.md)

private func addControlRoutes(_ router: Router<SandboxRequestContext>, state: SandboxState) {
    let control = router.group("/_sandbox")

    control.post("/reset") { _, _ -> Response in
        await state.reset()
        return SandboxAnswer.json(200, ["reset": true]).response
    }

    control.post("/apps") { request, _ -> Response in
        let app: SandboxApp
        switch await decode(SandboxApp.self, request) {
        case .success(let value): app = value
        case .failure(let answer): return answer.response
        }
        guard !app.clientId.isEmpty, !app.clientSecret.isEmpty else {
            return SandboxAnswer.badRequest("clientId and clientSecret must not be empty").response
        }
        guard let url = URL(string: app.callbackUrl), url.scheme != nil, url.host != nil else {
            return SandboxAnswer.badRequest("callbackUrl must be an absolute URL").response
        }
        await state.addApp(app)
        // The secret is not echoed back.
        return SandboxAnswer.json(201, ["clientId": app.clientId, "callbackUrl": app.callbackUrl]).response
    }

    control.post("/users") { request, _ -> Response in
        let body: CreateUserRequest
        switch await decode(CreateUserRequest.self, request) {
        case .success(let value): body = value
        case .failure(let answer): return answer.response
        }
        if let accountId = body.accountId, !AccountKey.isValidAccountId(accountId) {
            return SandboxAnswer.badRequest("accountId must be 1-128 characters of letters, digits, '-' and ':'")
                .response
        }
        let user = await state.addUser(body)
        return SandboxAnswer.json(201, ["accountId": user.accountId]).response
    }

    control.get("/users/:accountId") { _, context -> Response in
        let accountId = try context.parameters.require("accountId")
        guard let user = await state.user(accountId) else { return SandboxAnswer.notFound("unknown accountId").response }
        return SandboxAnswer.json(200, userStatus(user, now: await state.now)).response
    }

    // Closes at once, skipping the grace period a deletion has: existing tests and the demo rely on it.
    control.post("/users/:accountId/close") { _, context -> Response in
        let accountId = try context.parameters.require("accountId")
        guard await state.closeUser(accountId) else { return SandboxAnswer.notFound("unknown accountId").response }
        return SandboxAnswer.json(200, ["accountId": accountId, "closed": true, "status": "closed"]).response
    }

    // Deletes as Atlassian does: `deleting` for the grace period, then `closed`.
    control.post("/users/:accountId/delete") { _, context -> Response in
        let accountId = try context.parameters.require("accountId")
        guard let user = await state.deleteUser(accountId) else {
            return SandboxAnswer.notFound("unknown accountId").response
        }
        return SandboxAnswer.json(200, userStatus(user, now: await state.now)).response
    }

    control.post("/users/:accountId/update") { request, context -> Response in
        let accountId = try context.parameters.require("accountId")
        // The body is optional here: an empty one just marks the profile as changed.
        let patch: UpdateUserRequest
        switch await decode(UpdateUserRequest.self, request, emptyAs: UpdateUserRequest()) {
        case .success(let value): patch = value
        case .failure(let answer): return answer.response
        }
        guard let user = await state.updateUser(accountId, patch) else {
            return SandboxAnswer.notFound("unknown accountId").response
        }
        return SandboxAnswer.json(200, ["accountId": accountId, "lastUpdated": RFC3339.string(from: user.lastUpdated)])
            .response
    }

    control.post("/consent") { request, _ -> Response in
        let body: ConsentRequest
        switch await decode(ConsentRequest.self, request) {
        case .success(let value): body = value
        case .failure(let answer): return answer.response
        }
        if let accountId = body.accountId, await state.user(accountId) == nil {
            return SandboxAnswer.notFound("unknown accountId").response
        }
        await state.setConsent(accountId: body.accountId, deny: body.decision == .deny)
        let echo: [String: Any] = [
            "accountId": body.accountId ?? NSNull(), "decision": (body.decision ?? .allow).rawValue,
        ]
        return SandboxAnswer.json(200, echo).response
    }

    control.post("/grants/revoke") { request, _ -> Response in
        let body: RevokeRequest
        switch await decode(RevokeRequest.self, request) {
        case .success(let value): body = value
        case .failure(let answer): return answer.response
        }
        let count = await state.revokeGrants(clientId: body.clientId, accountId: body.accountId)
        return SandboxAnswer.json(200, ["revoked": count]).response
    }

    control.post("/faults") { request, _ -> Response in
        let rule: FaultRule
        switch await decode(FaultRule.self, request) {
        case .success(let value): rule = value
        case .failure(let answer): return answer.response
        }
        if let bad = (rule.random ?? []).first(where: { !(0...1).contains($0.probability) }) {
            return SandboxAnswer.badRequest("probability must be between 0 and 1, got \(bad.probability)").response
        }
        await state.addFaultRule(rule)
        return SandboxAnswer.encoded(200, await state.listFaults()).response
    }
    control.get("/faults") { _, _ -> Response in SandboxAnswer.encoded(200, await state.listFaults()).response }
    control.delete("/faults") { _, _ -> Response in
        await state.clearFaults()
        return SandboxAnswer.encoded(200, [FaultRule]()).response
    }

    control.get("/clock") { _, _ -> Response in
        SandboxAnswer.json(200, ["now": RFC3339.string(from: await state.now)]).response
    }
    control.post("/clock") { request, _ -> Response in
        let body: ClockRequest
        switch await decode(ClockRequest.self, request) {
        case .success(let value): body = value
        case .failure(let answer): return answer.response
        }
        guard body.advanceSeconds >= 0, body.advanceSeconds.isFinite else {
            return SandboxAnswer.badRequest("advanceSeconds must be a non-negative number; the clock never goes back")
                .response
        }
        let now = await state.advanceClock(seconds: body.advanceSeconds)
        return SandboxAnswer.json(200, ["now": RFC3339.string(from: now)]).response
    }

    control.get("/settings") { _, _ -> Response in SandboxAnswer.encoded(200, await state.settings).response }
    control.post("/settings") { request, _ -> Response in
        let patch: SettingsPatch
        switch await decode(SettingsPatch.self, request) {
        case .success(let value): patch = value
        case .failure(let answer): return answer.response
        }
        if let value = patch.cyclePeriodSeconds, value <= 0 {
            return SandboxAnswer.badRequest("cyclePeriodSeconds must be positive").response
        }
        if let value = patch.rateLimitRequests, value < 0 {
            return SandboxAnswer.badRequest("rateLimitRequests must be 0 (unlimited) or more").response
        }
        if let value = patch.rateLimitWindowSeconds, value <= 0 {
            return SandboxAnswer.badRequest("rateLimitWindowSeconds must be positive").response
        }
        if let value = patch.deletionGraceSeconds, !SandboxSettings.deletionGraceRange.contains(value) {
            let range = SandboxSettings.deletionGraceRange
            return SandboxAnswer.badRequest(
                "deletionGraceSeconds must be between \(range.lowerBound) and \(range.upperBound), got \(value)").response
        }
        return SandboxAnswer.encoded(200, await state.updateSettings(patch)).response
    }

    control.get("/calls") { request, _ -> Response in
        let calls = await state.pdrCalls(clientId: FormFields(query: request)["clientId"])
        return SandboxAnswer.encoded(200, ["calls": calls]).response
    }

    control.get("/token-calls") { request, _ -> Response in
        let calls = await state.tokenCalls(clientId: FormFields(query: request)["clientId"])
        return SandboxAnswer.encoded(200, ["calls": calls]).response
    }
}

// MARK: Helpers

/// A user's lifecycle as the control API shows it: `status` (active | deleting | closed), with `deletedAt` and
/// `closesAt` once deleted (sandbox clock, RFC 3339). A closed account that was never deleted has neither.
private func userStatus(_ user: SandboxUser, now: Date) -> [String: Any] {
    var body: [String: Any] = [
        "accountId": user.accountId, "status": user.lifecycle(at: now).name,
        "lastUpdated": RFC3339.string(from: user.lastUpdated),
    ]
    if let deletedAt = user.deletedAt { body["deletedAt"] = RFC3339.string(from: deletedAt) }
    if let closesAt = user.closesAt { body["closesAt"] = RFC3339.string(from: closesAt) }
    return body
}

extension SandboxAnswer {
    var response: Response {
        var fields = HTTPFields()
        for (name, value) in headers {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        guard let json else { return Response(status: .init(code: status), headers: fields) }
        fields[.contentType] = "application/json"
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }
}

/// Decodes a control-API body, or a 400 naming what is wrong (never a crash, never Hummingbird's generic error).
private func decode<T: Decodable>(
    _ type: T.Type, _ request: Request, emptyAs empty: T? = nil
) async -> Result<T, SandboxAnswerError> {
    var request = request
    guard let buffer = try? await request.collectBody(upTo: 1 << 20) else {
        return .failure(.init(answer: .badRequest("body too large or unreadable")))
    }
    if buffer.readableBytes == 0, let empty { return .success(empty) }
    do {
        return .success(try JSONDecoder().decode(T.self, from: Data(buffer: buffer)))
    } catch DecodingError.keyNotFound(let key, _) {
        return .failure(.init(answer: .badRequest("missing field \(key.stringValue)")))
    } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return .failure(.init(answer: .badRequest("field \(path) has the wrong type")))
    } catch DecodingError.dataCorrupted(let context) {
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return .failure(.init(answer: .badRequest(path.isEmpty ? "body is not valid JSON" : "field \(path) is invalid")))
    } catch {
        return .failure(.init(answer: .badRequest("body is not valid JSON")))
    }
}

/// Lets `decode` return an answer through `Result`.
struct SandboxAnswerError: Error, Sendable {
    var answer: SandboxAnswer
}

extension SandboxAnswerError {
    var response: Response { answer.response }
}

private func bearerToken(_ request: Request) -> String? {
    guard let header = request.headers[.authorization] else { return nil }
    let parts = header.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
    return String(parts[1]).trimmingCharacters(in: .whitespaces)
}

/// The token endpoint body as fields: JSON as Atlassian documents, or a form as generic OAuth libraries send (§1.4).
private func parseTokenBody(_ data: Data, contentType: String?) -> [String: String]? {
    if contentType?.lowercased().hasPrefix("application/x-www-form-urlencoded") == true {
        guard let text = String(data: data, encoding: .utf8) else { return nil }
        return FormFields(decoding: text).firstValues
    }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
    return object.compactMapValues { $0 as? String }
}
