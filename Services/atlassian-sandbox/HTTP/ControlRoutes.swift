import Contracts
import Foundation
import Hummingbird

// MARK: Control API (docs/sandbox.md)

func addControlRoutes(_ router: Router<SandboxRequestContext>, state: SandboxState) {
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

    addUserRoutes(control, state: state)
    addConsentAndGrantRoutes(control, state: state)
    addFaultRoutes(control, state: state)
    addClockAndSettingsRoutes(control, state: state)

    control.get("/calls") { request, _ -> Response in
        let calls = await state.pdrCalls(clientId: FormFields(query: request)["clientId"])
        return SandboxAnswer.encoded(200, ["calls": calls]).response
    }

    control.get("/token-calls") { request, _ -> Response in
        let calls = await state.tokenCalls(clientId: FormFields(query: request)["clientId"])
        return SandboxAnswer.encoded(200, ["calls": calls]).response
    }
}

/// Users: created, read, closed, deleted, their profile marked as updated.
private func addUserRoutes(_ control: RouterGroup<SandboxRequestContext>, state: SandboxState) {
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
}

/// The user's answer on the consent screen, and grants revoked as a user or Atlassian would.
private func addConsentAndGrantRoutes(_ control: RouterGroup<SandboxRequestContext>, state: SandboxState) {
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
}

/// Injected faults.
private func addFaultRoutes(_ control: RouterGroup<SandboxRequestContext>, state: SandboxState) {
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
}

/// The sandbox clock and its settings (cycle period, rate limit, deletion grace).
private func addClockAndSettingsRoutes(_ control: RouterGroup<SandboxRequestContext>, state: SandboxState) {
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
