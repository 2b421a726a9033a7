import Contracts
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceKit
import ServiceRuntime

/// The executor's routes (``ErasureAPI/addRoutes(to:ledger:verifier:adminToken:notifier:gate:metrics:partitions:logger:onCompleted:)``)
/// with what they share: the ledger, who may call, what an operator action must set off, and where the other replicas'
/// erasures are.
///
/// **At N replicas** each replica's ledger holds the erasures of its partitions (ErasureIntake). A route about one
/// erasure is answered by the owner of its partition (forwarded there when this replica is not it); a tenant's request
/// opens each subject's erasure on its subject's partition's owner; lists, counts, the participants, the audit and a
/// retirement gather every owner's part and merge them. `partitions` nil (a single replica, tests): all is local.
struct ErasureRoutes: Sendable {
    let ledger: ErasureLedger
    let verifier: TenantTokenVerifier
    let admin: BearerSecret
    let notifier: ErasureNotifier
    let gate: RestoreGate?
    let metrics: ErasureMetrics?
    let partitions: PartitionRouter?
    let logger: Logger
    let onCompleted: @Sendable () -> Void

    /// Set on a retirement another replica forwards: the time the retirement takes effect, in ms, the same on every
    /// replica.
    static let retiredAtHeader = "Lethe-Retired-At"

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

    /// nil when erasure `id` is this replica's (the route answers); otherwise its partition's owner's answer.
    func owners(_ request: Request, _ context: LetheRequestContext, erasure id: String) async throws -> Response? {
        try await partitions?.forwardUnlessOwned(request, context: context, partition: ledger.partition(of: id))
    }

    /// The other replicas' answers to the same request (or to `uri`), to merge with this one's.
    func others(_ request: Request, _ context: LetheRequestContext, uri: String? = nil) async throws
        -> [ReplicaForwarder.Answer]
    {
        try await partitions?.gather(request, context: context, uri: uri) ?? []
    }

    // MARK: One erasure

    func addErasureRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/erasures/:id") { request, context -> Response in
            let id = try context.parameters.require("id")
            if let answer = try await owners(request, context, erasure: id) { return answer }
            return try await authorizedErasure(request, id: id).response(from: request, context: context)
        }

        router.post("/v1/erasures/:id/retry") { request, context -> Response in
            let id = try context.parameters.require("id")
            if let answer = try await owners(request, context, erasure: id) { return answer }
            return try await retry(request, id: id).response(from: request, context: context)
        }

        router.post("/v1/erasures/:id/waive") { request, context -> Response in
            let id = try context.parameters.require("id")
            if let answer = try await owners(request, context, erasure: id) { return answer }
            return try await waive(request, id: id).response(from: request, context: context)
        }

        router.get("/v1/erasures") { request, context -> ErasurePage in
            try admin.require(request)
            return try await page(request, context, tenant: nil)
        }

        router.get("/v1/erasures/counts") { request, context -> ErasureCounts in
            try admin.require(request)
            var counts = ErasureCounts(try await ledger.counts())
            for answer in try await others(request, context) { counts.add(try answer.decode(ErasureCounts.self)) }
            return counts
        }
    }

    /// `POST /v1/erasures/{id}/retry`: its failed participants are sent the command again.
    func retry(_ request: Request, id: String) async throws -> ErasureRecord {
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

    /// A page of erasures, of one tenant or (nil) of all, after the query's cursor, of its status if it names one:
    /// this replica's page merged with every other owner's (each answers the same query from its partitions).
    func page(_ request: Request, _ context: LetheRequestContext, tenant: String?) async throws -> ErasurePage {
        let query = FormFields(query: request)
        let limit = try PageCursor.parseLimit(
            query["limit"], default: ErasureAPI.defaultLimit, maximum: ErasureAPI.maximumLimit)
        var after: ErasureLedger.ListPosition?
        if let key = try ErasureAPI.cursor.parseKey(query["cursor"]) {
            guard let position = ErasureLedger.ListPosition(key: key) else {
                throw HTTPError(.badRequest, message: "cursor is not one this API issued")
            }
            after = position
        }
        var status: ErasureStatus?
        if let raw = query["status"] {
            guard let parsed = ErasureStatus(rawValue: raw) else {
                throw HTTPError(
                    .badRequest,
                    message: "status must be one of \(ErasureStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            status = parsed
        }
        let local = try await ledger.erasures(tenantId: tenant, status: status, after: after, limit: limit)
        var records = local.records
        var more = local.more
        for answer in try await others(request, context) {
            let page = try answer.decode(ErasurePage.self)
            records += page.erasures
            more = more || page.nextCursor != nil
        }
        // Each part is in order and at most `limit` long: the first `limit` of them all are the page.
        records.sort { ErasureLedger.ListPosition(of: $0) < ErasureLedger.ListPosition(of: $1) }
        more = more || records.count > limit
        let shown = Array(records.prefix(limit))
        return ErasurePage(
            erasures: shown,
            nextCursor: more ? shown.last.map { ErasureAPI.cursor.make(afterKey: ErasureLedger.ListPosition(of: $0).key) } : nil)
    }

    // MARK: A tenant's erasures

    func addTenantRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/tenants/:tenant/erasures") { request, context -> ErasurePage in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            return try await page(request, context, tenant: tenant)
        }

        router.post("/v1/tenants/:tenant/erasures") { request, context -> Response in
            let tenant = try context.parameters.require("tenant")
            _ = try await verifier.authorize(request, tenant: tenant)
            try requireRestored()
            let accepted = try await requestErasure(request, context, tenant: tenant)
            var response = try context.responseEncoder.encode(accepted, from: request, context: context)
            response.status = .accepted
            return response
        }
    }

    /// A tenant's erasure request (`{accountId, appId?, policy?}`): one erasure per app named, or per app of the
    /// tenant when none is, each opened by the owner of its subject's partition (asked with the app named).
    func requestErasure(_ request: Request, _ context: LetheRequestContext, tenant: String) async throws
        -> ErasureAccepted
    {
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
        var local: [IntakeRequest] = []
        var idsElsewhere: [String] = []
        for app in apps {
            let intake = IntakeRequest(
                tenantId: tenant, appId: app, accountId: body.accountId, cause: .tenantRequest,
                requestedPolicy: body.policy)
            let one = ErasureRequestBody(accountId: body.accountId, appId: app, policy: body.policy)
            if let partitions, let answer = try await partitions.ask(
                request, context: context, partition: ledger.partition(of: intake.subjectKey),
                body: ByteBuffer(data: try JSONEncoder().encode(one)))
            {
                idsElsewhere += try answer.decode(ErasureAccepted.self).erasureIds
            } else {
                local.append(intake)
            }
        }
        var ids: [String] = []
        if !local.isEmpty {
            ids = try await ledger.intake(local) ?? []
            notifier.notify()
        }
        ids += idsElsewhere
        return ErasureAccepted(erasureId: ids.first ?? "", erasureIds: ids)
    }

    // MARK: Participants

    func addParticipantRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/participants") { request, context -> ParticipantsOverview in
            try admin.require(request)
            var overview = try await ledger.participantsOverview()
            for answer in try await others(request, context) {
                overview.merge(try answer.decode(ParticipantsOverview.self))
            }
            return overview
        }

        router.post("/v1/participants/:participant/retire") { request, context -> ErasureLedger.Retirement in
            try await retire(request, context, participant: try context.parameters.require("participant"))
        }
    }

    /// `POST /v1/participants/{participant}/retire`: no erasure waits for it any more, the reason in the audit. The
    /// replica that takes the request asks every other owner to waive it in its partitions' erasures (at the same
    /// time, `Lethe-Retired-At`), then waives it in its own, and records and publishes the retirement with what they
    /// all did — so a replica that did not answer, or restarts, applies it from the participants topic.
    func retire(_ request: Request, _ context: LetheRequestContext, participant: String) async throws
        -> ErasureLedger.Retirement
    {
        try admin.require(request)
        let buffer = try await request.body.collect(upTo: 16 * 1024)
        let reason = try ErasureAPI.parseReason(Data(buffer: buffer))
        try requireRestored()
        let forwarded = PartitionRouter.isForwarded(request)
        let retiredAt: Date
        let header = request.headers.first { $0.name.canonicalName == Self.retiredAtHeader.lowercased() }
        if forwarded, let raw = header?.value {
            guard let ms = Int64(raw) else {
                throw HTTPError(.badRequest, message: "\(Self.retiredAtHeader) must be milliseconds since the epoch")
            }
            retiredAt = Date(milliseconds: ms)
        } else {
            retiredAt = Date(milliseconds: Date().milliseconds)
        }
        var elsewhere: (waived: [String], completed: [String]) = ([], [])
        for answer in try await partitions?.gather(
            request, context: context, body: buffer, headers: [(Self.retiredAtHeader, "\(retiredAt.milliseconds)")]
        ) ?? [] where answer.status != 404 {
            let part = try answer.decode(ErasureLedger.Retirement.self)
            elsewhere.waived += part.waived
            elsewhere.completed += part.completed
        }
        let effect = try await ledger.retire(
            participant, reason: reason, at: retiredAt, recorded: !forwarded, elsewhere: elsewhere)
        guard case .retired(let retirement) = effect else {
            throw HTTPError(
                .notFound, message: "no participant \(participant) is declared or awaited by an open erasure")
        }
        let local = retirement.waived.count - elsewhere.waived.count
        metrics?.waived.increment(by: local)
        if !forwarded { metrics?.retired.increment() }
        let message: Logger.Message = forwarded
            ? "participant retired by an operator through another replica" : "participant retired by an operator"
        logger.notice(message, metadata: [
            "participant": "\(participant)", "reason": "\(reason)", "waived": "\(retirement.waived.count)",
            "completed": "\(retirement.completed.count)",
        ])
        completedByOperator(retirement.completed.count - elsewhere.completed.count)
        return retirement
    }

    // MARK: Audit

    func addAuditRoutes(to router: Router<LetheRequestContext>) {
        router.get("/v1/audit/verify") { request, context -> AuditVerification in
            try admin.require(request)
            // Every chain as a whole: a partition's chain is on its owner, and entries of the lethe-audit-v1 chain
            // may be on several replicas (each read back those of its partitions' erasures).
            let entries = try await auditEntries(request, context, uri: "/v1/audit/export")
            return AuditVerification.verify(entries, keys: ledger.keys)
        }

        router.get("/v1/audit/export") { request, context -> Response in
            try admin.require(request)
            let query = FormFields(query: request)
            let from = try ErasureAPI.parseTime(query["from"], name: "from")
            let to = try ErasureAPI.parseTime(query["to"], name: "to")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var lines = ""
            for entry in try await auditEntries(request, context, from: from, to: to) {
                lines += String(decoding: try encoder.encode(entry), as: UTF8.self) + "\n"
            }
            return Response(
                status: .ok, headers: [.contentType: "application/x-ndjson"],
                body: .init(byteBuffer: ByteBuffer(string: lines)))
        }
    }

    /// The audit entries of this replica and of every other owner (their export, `uri` or the request's own), chain
    /// by chain (the lethe-audit-v1 chain first) in sequence order. An entry two replicas hold alike (of the v1 chain)
    /// comes once; two that differ both stay, so the verification sees the conflict.
    func auditEntries(
        _ request: Request, _ context: LetheRequestContext, uri: String? = nil, from: Date? = nil, to: Date? = nil
    ) async throws -> [AuditEntry] {
        var entries = try await ledger.auditEntries(from: from, to: to)
        for answer in try await others(request, context, uri: uri) {
            for line in String(buffer: try answer.successBody()).split(separator: "\n") where !line.isEmpty {
                do {
                    entries.append(try JSONDecoder().decode(AuditEntry.self, from: Data(line.utf8)))
                } catch {
                    throw HTTPError(.badGateway, message: "replica \(answer.replica) exported an unreadable audit entry")
                }
            }
        }
        var seen = Set<String>()
        return entries.filter { seen.insert("\($0.chain ?? -1):\($0.sequence):\($0.entryHash)").inserted }
            .sorted { ($0.chain ?? -1, $0.sequence) < ($1.chain ?? -1, $1.sequence) }
    }
}
