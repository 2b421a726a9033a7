import Contracts
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceKit

/// The executor's routes (``ErasureAPI/addRoutes(to:ledger:verifier:adminToken:notifier:gate:metrics:logger:onCompleted:)``)
/// with what they share: the ledger, who may call, and what an operator action must set off.
struct ErasureRoutes: Sendable {
    let ledger: ErasureLedger
    let verifier: TenantTokenVerifier
    let admin: BearerSecret
    let notifier: ErasureNotifier
    let gate: RestoreGate?
    let metrics: ErasureMetrics?
    let logger: Logger
    let onCompleted: @Sendable () -> Void

    /// 503 while the state topics are being read: writes wait for every participant to be known.
    func requireRestored() throws {
        if let reason = gate?.notReadyReason { throw HTTPError(.serviceUnavailable, message: reason) }
    }

    /// The erasure if the caller may see it; 404 otherwise (a tenant must not learn other tenants' ids).
    func authorizedErasure(_ request: Request, id: String) async throws -> ErasureRecord {
        if admin.matches(request) {
            guard let record = try await ledger.erasure(id) else { throw HTTPError(.notFound) }
            return record
        }
        let claims: TenantAccessClaims
        do {
            claims = try await verifier.authenticate(request)
        } catch {
            throw error.httpError
        }
        guard let record = try await ledger.erasure(id), record.tenantId == claims.tenantId else {
            throw HTTPError(.notFound)
        }
        return record
    }

    /// Erasures completed by an operator's action: counted, and the completion relay and the caller's hook woken.
    func completedByOperator(_ count: Int) {
        guard count > 0 else { return }
        metrics?.completed.increment(by: count)
        notifier.notify()
        onCompleted()
    }

    // MARK: One erasure

    func addErasureRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/erasures/:id") { request, context -> ErasureRecord in
            try await authorizedErasure(request, id: try context.parameters.require("id"))
        }

        router.post("/v1/erasures/:id/retry") { request, context -> ErasureRecord in
            let id = try context.parameters.require("id")
            _ = try await authorizedErasure(request, id: id)
            try requireRestored()
            switch try await ledger.retry(id) {
            case .notFound: throw HTTPError(.notFound)
            case .alreadyCompleted: throw HTTPError(.conflict, message: "the erasure is already completed")
            case .retried: notifier.notify()
            }
            guard let record = try await ledger.erasure(id) else { throw HTTPError(.notFound) }
            return record
        }

        router.post("/v1/erasures/:id/waive") { request, context -> ErasureRecord in
            try await waive(request, id: try context.parameters.require("id"))
        }

        router.get("/v1/erasures") { request, _ -> ErasurePage in
            try admin.require(request)
            return try await page(request, tenant: nil)
        }

        router.get("/v1/erasures/counts") { request, _ -> ErasureCounts in
            try admin.require(request)
            return ErasureCounts(try await ledger.counts())
        }
    }

    /// `POST /v1/erasures/{id}/waive`: one participant of one erasure no longer awaited, the reason in the audit.
    func waive(_ request: Request, id: String) async throws -> ErasureRecord {
        try admin.require(request)
        let waiver = try ErasureAPI.parseWaiver(Data(buffer: try await request.body.collect(upTo: 16 * 1024)))
        try requireRestored()
        switch try await ledger.waive(waiver.participant, inErasure: id, reason: waiver.reason) {
        case .notFound: throw HTTPError(.notFound)
        case .alreadyCompleted: throw HTTPError(.conflict, message: "the erasure is already completed")
        case .notAwaited:
            throw HTTPError(.conflict, message: "\(waiver.participant) is not awaited by this erasure")
        case .waived(let completed):
            metrics?.waived.increment()
            logger.notice("participant waived in one erasure by an operator", metadata: [
                "erasure": "\(id)", "participant": "\(waiver.participant)", "reason": "\(waiver.reason)",
                "completed": "\(completed)",
            ])
            completedByOperator(completed ? 1 : 0)
        }
        guard let record = try await ledger.erasure(id) else { throw HTTPError(.notFound) }
        return record
    }

    /// A page of erasures, of one tenant or (nil) of all, after the query's cursor, of its status if it names one.
    func page(_ request: Request, tenant: String?) async throws -> ErasurePage {
        let query = FormFields(query: request)
        let limit = try PageCursor.parseLimit(
            query["limit"], default: ErasureAPI.defaultLimit, maximum: ErasureAPI.maximumLimit)
        let afterRow = try ErasureAPI.cursor.parse(query["cursor"])
        var status: ErasureStatus?
        if let raw = query["status"] {
            guard let parsed = ErasureStatus(rawValue: raw) else {
                throw HTTPError(
                    .badRequest,
                    message: "status must be one of \(ErasureStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            status = parsed
        }
        let page = try await ledger.erasures(tenantId: tenant, status: status, afterRow: afterRow, limit: limit)
        return ErasurePage(erasures: page.records, nextCursor: page.lastRow.map(ErasureAPI.cursor.make(after:)))
    }

    // MARK: A tenant's erasures

    func addTenantRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/tenants/:tenant/erasures") { request, context -> ErasurePage in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            return try await page(request, tenant: tenant)
        }

        router.post("/v1/tenants/:tenant/erasures") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            try requireRestored()
            let accepted = try await requestErasure(request, tenant: tenant)
            var response = try context.responseEncoder.encode(accepted, from: request, context: context)
            response.status = .accepted
            return response
        }
    }

    /// A tenant's erasure request (`{accountId, appId?, policy?}`): one erasure per app named, or per app of the
    /// tenant when none is.
    func requestErasure(_ request: Request, tenant: String) async throws -> ErasureAccepted {
        let buffer = try await request.body.collect(upTo: 16 * 1024)
        let body: ErasureRequestBody
        do {
            body = try JSONDecoder().decode(ErasureRequestBody.self, from: Data(buffer: buffer))
        } catch {
            throw HTTPError(
                .badRequest,
                message: "body must be JSON {accountId, appId?, policy?} with policy one of delete, scrub, disassociate")
        }
        guard AccountKey.isValidAccountId(body.accountId) else {
            throw HTTPError(.badRequest, message: "accountId must be 1 to 128 letters, digits, '-' or ':'")
        }
        let apps: [String]
        if let appId = body.appId {
            guard !appId.isEmpty, !appId.contains(":"), appId.count <= 256 else {
                throw HTTPError(.badRequest, message: "appId must be non-empty and without ':'")
            }
            apps = [appId]
        } else {
            apps = try await ledger.apps(ofTenant: tenant) ?? []
            guard !apps.isEmpty else {
                throw HTTPError(.badRequest, message: "appId is required: the tenant has no configured apps")
            }
        }
        let requests = apps.map {
            IntakeRequest(
                tenantId: tenant, appId: $0, accountId: body.accountId, cause: .tenantRequest,
                requestedPolicy: body.policy)
        }
        let ids = try await ledger.intake(requests) ?? []
        notifier.notify()
        return ErasureAccepted(erasureId: ids.first ?? "", erasureIds: ids)
    }

    // MARK: Participants

    func addParticipantRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/participants") { request, _ -> ParticipantsOverview in
            try admin.require(request)
            return try await ledger.participantsOverview()
        }

        router.post("/v1/participants/:participant/retire") { request, context -> ErasureLedger.Retirement in
            try await retire(request, participant: try context.parameters.require("participant"))
        }
    }

    /// `POST /v1/participants/{participant}/retire`: no erasure waits for it any more, the reason in the audit.
    func retire(_ request: Request, participant: String) async throws -> ErasureLedger.Retirement {
        try admin.require(request)
        let buffer = try await request.body.collect(upTo: 16 * 1024)
        let reason = try ErasureAPI.parseReason(Data(buffer: buffer))
        try requireRestored()
        guard case .retired(let retirement) = try await ledger.retire(participant, reason: reason) else {
            throw HTTPError(
                .notFound, message: "no participant \(participant) is declared or awaited by an open erasure")
        }
        metrics?.retired.increment()
        metrics?.waived.increment(by: retirement.waived.count)
        logger.notice("participant retired by an operator", metadata: [
            "participant": "\(participant)", "reason": "\(reason)", "waived": "\(retirement.waived.count)",
            "completed": "\(retirement.completed.count)",
        ])
        completedByOperator(retirement.completed.count)
        return retirement
    }

    // MARK: Audit

    func addAuditRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/audit/verify") { request, _ -> AuditVerification in
            try admin.require(request)
            return try await ledger.verifyAudit()
        }

        router.get("/v1/audit/export") { request, _ -> Response in
            try admin.require(request)
            let query = FormFields(query: request)
            let from = try ErasureAPI.parseTime(query["from"], name: "from")
            let to = try ErasureAPI.parseTime(query["to"], name: "to")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var lines = ""
            for entry in try await ledger.auditEntries(from: from, to: to) {
                lines += String(decoding: try encoder.encode(entry), as: UTF8.self) + "\n"
            }
            return Response(
                status: .ok, headers: [.contentType: "application/x-ndjson"],
                body: .init(byteBuffer: ByteBuffer(string: lines)))
        }
    }
}
