import Contracts
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceKit

/// `POST /v1/tenants/{tenant}/erasures` body.
struct ErasureRequestBody: Decodable, Sendable {
    var accountId: String
    var appId: String?
    var policy: ErasurePolicy?
}

/// `202` answer: the erasure id (and every id when the tenant's several apps each got one).
struct ErasureAccepted: ResponseCodable, Sendable {
    var erasureId: String
    var erasureIds: [String]
}

/// A page of erasures; `nextCursor` is absent on the last page.
struct ErasurePage: ResponseCodable, Sendable {
    var erasures: [ErasureRecord]
    var nextCursor: String?
}

extension ErasureCounts: ResponseCodable {
    /// `GET /v1/erasures/counts` from the ledger's counts.
    init(_ counts: LedgerCounts) {
        self.init(
            pending: counts.byStatus[.pending] ?? 0, dispatched: counts.byStatus[.dispatched] ?? 0,
            needsAttention: counts.byStatus[.needsAttention] ?? 0, completed: counts.byStatus[.completed] ?? 0,
            open: counts.open, overdue: counts.overdue)
    }
}

extension ErasureRecord: ResponseEncodable {}
extension AuditVerification: ResponseEncodable {}
extension ErasureLedger.Retirement: ResponseEncodable {}
extension ParticipantsOverview: ResponseEncodable {}

/// `POST /v1/participants/{participant}/retire` body.
struct RetireBody: Decodable, Sendable {
    var reason: String?
}

/// `POST /v1/erasures/{id}/waive` body.
struct WaiveBody: Decodable, Sendable {
    var participant: String?
    var reason: String?
}

/// The executor's HTTP API (port 8083).
///
/// Tenant routes need the tenant's JWT (`TenantTokenVerifier.authorize`: another tenant's token gets 404, as if
/// the erasure did not exist). Operator routes need `LETHE_ADMIN_TOKEN` as a bearer token, compared in constant time.
/// `GET /v1/erasures/{id}` and its retry accept either: the admin, or the erasure's own tenant. The operator lists every
/// tenant's erasures with `GET /v1/erasures`, counts them with `GET /v1/erasures/counts`, and waives one participant
/// of one erasure with `POST /v1/erasures/{id}/waive` (retiring a participant waives it in every erasure).
///
/// Routes that open, dispatch or complete erasures answer 503 until the tenants and participants topics were read to
/// their end since the start (`gate`): before that, the executor does not know every participant an erasure waits for.
enum ErasureAPI {
    static let defaultLimit = 50
    static let maximumLimit = 500
    static let maximumReasonLength = 500
    static let cursor = PageCursor(kind: "e")

    static func addRoutes(
        to router: Router<LetheRequestContext>, ledger: ErasureLedger, verifier: TenantTokenVerifier,
        adminToken: String, notifier: ErasureNotifier, gate: RestoreGate? = nil, metrics: ErasureMetrics? = nil,
        logger: Logger = Logger(label: "erasure-executor"), onCompleted: @escaping @Sendable () -> Void = {}
    ) {
        let admin = BearerSecret(adminToken, realm: "admin token")

        /// 503 while the state topics are being read: writes wait for every participant to be known.
        @Sendable func requireRestored() throws {
            if let reason = gate?.notReadyReason { throw HTTPError(.serviceUnavailable, message: reason) }
        }

        /// The erasure if the caller may see it; 404 otherwise (a tenant must not learn other tenants' ids).
        @Sendable func authorizedErasure(_ request: Request, id: String) async throws -> ErasureRecord {
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
            try admin.require(request)
            let id = try context.parameters.require("id")
            let waiver = try parseWaiver(Data(buffer: try await request.body.collect(upTo: 16 * 1024)))
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
                if completed {
                    metrics?.completed.increment()
                    notifier.notify()
                    onCompleted()
                }
            }
            guard let record = try await ledger.erasure(id) else { throw HTTPError(.notFound) }
            return record
        }

        /// A page of erasures, of one tenant or (nil) of all, after the query's cursor, of its status if it names one.
        @Sendable func page(_ request: Request, tenant: String?) async throws -> ErasurePage {
            let query = FormFields(query: request)
            let limit = try PageCursor.parseLimit(query["limit"], default: defaultLimit, maximum: maximumLimit)
            let afterRow = try cursor.parse(query["cursor"])
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
            return ErasurePage(erasures: page.records, nextCursor: page.lastRow.map(cursor.make(after:)))
        }

        router.get("/v1/tenants/:tenant/erasures") { request, context -> ErasurePage in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            return try await page(request, tenant: tenant)
        }

        router.get("/v1/erasures") { request, _ -> ErasurePage in
            try admin.require(request)
            return try await page(request, tenant: nil)
        }

        router.get("/v1/erasures/counts") { request, _ -> ErasureCounts in
            try admin.require(request)
            return ErasureCounts(try await ledger.counts())
        }

        router.post("/v1/tenants/:tenant/erasures") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            try requireRestored()
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
            let accepted = ErasureAccepted(erasureId: ids.first ?? "", erasureIds: ids)
            var response = try context.responseEncoder.encode(accepted, from: request, context: context)
            response.status = .accepted
            return response
        }

        router.get("/v1/participants") { request, _ -> ParticipantsOverview in
            try admin.require(request)
            return try await ledger.participantsOverview()
        }

        router.post("/v1/participants/:participant/retire") { request, context -> ErasureLedger.Retirement in
            try admin.require(request)
            let participant = try context.parameters.require("participant")
            let buffer = try await request.body.collect(upTo: 16 * 1024)
            let reason = try parseReason(Data(buffer: buffer))
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
            if !retirement.completed.isEmpty {
                metrics?.completed.increment(by: retirement.completed.count)
                notifier.notify()
                onCompleted()
            }
            return retirement
        }

        router.get("/v1/audit/verify") { request, _ -> AuditVerification in
            try admin.require(request)
            return try await ledger.verifyAudit()
        }

        router.get("/v1/audit/export") { request, _ -> Response in
            try admin.require(request)
            let query = FormFields(query: request)
            let from = try parseTime(query["from"], name: "from")
            let to = try parseTime(query["to"], name: "to")
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

    /// The retirement reason from a `{"reason": "…"}` body: required, 1 to 500 characters after trimming, no control
    /// characters, and no `@` — it goes into the audit and every affected `ErasureCompleted`, which must stay free of
    /// personal data, and an email address is the commonest slip.
    static func parseReason(_ body: Data) throws -> String {
        let decoded: RetireBody
        do {
            decoded = try JSONDecoder().decode(RetireBody.self, from: body)
        } catch {
            throw HTTPError(.badRequest, message: "body must be JSON {\"reason\": \"why the participant is retired\"}")
        }
        return try validReason(decoded.reason, why: "why the participant is retired")
    }

    /// The waiver's participant and reason.
    static func parseWaiver(_ body: Data) throws -> (participant: String, reason: String) {
        let rule = "body must be JSON {\"participant\": \"…\", \"reason\": \"why it is waived in this erasure\"}"
        let decoded: WaiveBody
        do {
            decoded = try JSONDecoder().decode(WaiveBody.self, from: body)
        } catch {
            throw HTTPError(.badRequest, message: rule)
        }
        guard let participant = decoded.participant, !participant.isEmpty else {
            throw HTTPError(.badRequest, message: rule)
        }
        return (participant, try validReason(decoded.reason, why: "why the participant is waived in this erasure"))
    }

    /// A retirement's or waiver's reason: it is published (audit, `ErasureCompleted`), so it is required, short, and
    /// must not look like personal data.
    static func validReason(_ raw: String?, why: String) throws -> String {
        let reason = (raw ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !reason.isEmpty else {
            throw HTTPError(.badRequest, message: "reason is required: \(why) (no personal data)")
        }
        guard reason.count <= maximumReasonLength else {
            throw HTTPError(.badRequest, message: "reason must be at most \(maximumReasonLength) characters")
        }
        guard !reason.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw HTTPError(.badRequest, message: "reason must not contain control characters")
        }
        guard !reason.contains("@") else {
            throw HTTPError(
                .badRequest, message: "reason must not contain personal data such as an email address ('@')")
        }
        return reason
    }

    /// A query's `+` is a space (form encoding, `FormFields`), so `from=2026-01-31T00:00:00+01:00` sent without
    /// `%2B` arrives with a space before its offset: read that space as the `+` the client meant, since a time has no
    /// other place for one.
    static func parseTime(_ raw: String?, name: String) throws -> Date? {
        guard let raw else { return nil }
        let offsetRestored = raw.firstIndex(of: " ").map { raw.replacingCharacters(in: $0...$0, with: "+") }
        guard let date = (try? Date(raw, strategy: .iso8601))
                ?? offsetRestored.flatMap({ try? Date($0, strategy: .iso8601) })
        else {
            throw HTTPError(.badRequest, message: "\(name) must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z")
        }
        return date
    }
}
