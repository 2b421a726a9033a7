import Contracts
import Foundation
import Hummingbird

// MARK: Atlassian's endpoints (ATLASSIAN.md §1–§3)

func addAtlassianRoutes(_ router: Router<SandboxRequestContext>, state: SandboxState) {
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

// MARK: Helpers

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
