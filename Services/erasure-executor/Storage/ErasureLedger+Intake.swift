import Contracts
import Foundation
import GRDB

extension ErasureLedger {
    // MARK: Intake

    /// What one write transaction reads once and reuses for every item of a batch: the declared participants and the
    /// audit chain's tail. It lives inside one transaction only, and the writer is
    /// serialized, so nothing outside can change what it caches while it is used.
    final class TransactionCache {
        private var participantNames: [String]?
        /// The last audit entry's sequence and hash of each chain once read; updated by every entry appended to it in
        /// this transaction.
        var auditTails: [Int: (sequence: Int, hash: String)] = [:]

        /// The declared participants, by name.
        func participants(in db: GRDB.Database) throws -> [String] {
            if let participantNames { return participantNames }
            let names = try String.fetchAll(db.cachedStatement(sql: "SELECT name FROM participants ORDER BY name"))
            participantNames = names
            return names
        }
    }

    /// Opens an erasure per request, or joins the open one of the same (tenant, app, account), and enqueues the
    /// commands, all in one transaction. With `eventId`, a redelivered event is recognised and changes nothing
    /// (returns nil). Returns the erasure ids, one per request.
    func intake(_ requests: [IntakeRequest], eventId: String? = nil, at now: Date = Date()) async throws -> [String]? {
        try await write { [self] db in
            try intake(requests, eventId: eventId, at: now, cache: TransactionCache(), in: db)
        }
    }

    private func intake(
        _ requests: [IntakeRequest], eventId: String?, at now: Date, cache: TransactionCache, in db: GRDB.Database
    ) throws -> [String]? {
        if let eventId, try !Self.recordProcessed(keys.eventDigest(eventId), at: now, in: db) { return nil }
        return try requests.map { try openOrJoin($0, at: now, cache: cache, in: db) }
    }

    /// `ProcessedEvents.record(_:consumer:"intake")` with a cached statement: intake records one event per status,
    /// and compiling the same INSERT for each was a visible share of a batch. Same table, same first-outcome-stands
    /// semantics; returns false when `digest` (the event id's ``AuditKeys/eventDigest(_:)``) was already recorded.
    private static func recordProcessed(_ digest: String, at now: Date, in db: GRDB.Database) throws -> Bool {
        try db.cachedStatement(sql: """
            INSERT INTO lethe_processed_events (consumer, event_id, outcome, processed_at) VALUES ('intake', ?, '', ?)
            ON CONFLICT (consumer, event_id) DO NOTHING
            """).execute(arguments: [digest, now.timeIntervalSince1970])
        return db.changesCount == 1
    }

    /// What intake hands the ledger for one record.
    enum IntakeWork: Sendable {
        /// A closed status or an API request: open or join these erasures (once per `eventId`).
        case open([IntakeRequest], eventId: String)
        /// An `ErasureRequested` without a tenant: every tenant configured with `appId`, read in the same transaction.
        case openForApp(appId: String, accountId: String, cause: ErasureCause, policy: ErasurePolicy?, eventId: String)
        case ack(ErasureAcknowledged)
    }

    enum IntakeEffect: Sendable, Equatable {
        case opened(Int)
        case repeated
        case ack(AckEffect)
        /// Nothing applied, nothing recorded: the record goes to the DLQ with this reason (a replay after the cause
        /// is fixed, e.g. the tenant configured, is applied then).
        case rejected(String)
    }

    /// Applies a batch of intake records in ONE transaction (one WAL append, one fsync at synchronous=FULL), in order,
    /// so intake can commit the batch's offsets once. Each item keeps its own idempotency (processed events, recorded
    /// acks), so a redelivered batch changes nothing. Completions within the batch are chained in the order of the
    /// acks that completed them.
    func apply(_ work: [IntakeWork], at now: Date = Date()) async throws -> [IntakeEffect] {
        try await write { [self] db in
            let cache = TransactionCache()
            return try work.map { item in
                switch item {
                case .open(let requests, let eventId):
                    return try intake(requests, eventId: eventId, at: now, cache: cache, in: db)
                        .map { .opened($0.count) } ?? .repeated
                case .openForApp(let appId, let accountId, let cause, let policy, let eventId):
                    let requests = try Self.tenants(usingApp: appId, in: db).map {
                        IntakeRequest(
                            tenantId: $0, appId: appId, accountId: accountId, cause: cause, requestedPolicy: policy)
                    }
                    // Without a tenant and with no tenant configured with the app, there is nobody to erase for:
                    // taking it as done would lose the request without a trace.
                    guard !requests.isEmpty else {
                        return .rejected("ErasureRequested without tenantId, and no configured tenant uses its appId")
                    }
                    return try intake(requests, eventId: eventId, at: now, cache: cache, in: db)
                        .map { .opened($0.count) } ?? .repeated
                case .ack(let ack):
                    return .ack(try applyAck(ack, at: now, cache: cache, in: db))
                }
            }
        }
    }

    private func openOrJoin(
        _ request: IntakeRequest, at now: Date, cache: TransactionCache, in db: GRDB.Database
    ) throws -> String {
        let t = now.timeIntervalSince1970
        if let existing = try Row.fetchOne(
            db.cachedStatement(sql: """
                SELECT id, cause, status FROM erasures WHERE tenant_id = ? AND app_id = ? AND account_id = ?
                """),
            arguments: [request.tenantId, request.appId, request.accountId])
        {
            let id: String = existing["id"]
            try db.cachedStatement(sql: "UPDATE erasures SET requests = requests + 1, updated_at = ? WHERE id = ?")
                .execute(arguments: [t, id])
            // Atlassian closed the account while another erasure of it was open (a failed refresh, the tenant's
            // request): the open one becomes the closed account's erasure, rather than a second erasure beside it.
            if request.cause == .atlassianClosed, existing["cause"] != ErasureCause.atlassianClosed.rawValue {
                try upgradeToClosed(id, of: request, status: existing["status"], at: t, in: db)
            }
            return id
        }
        let tenant = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT policy, deadline_days FROM tenants WHERE tenant_id = ?"),
            arguments: [request.tenantId])
        var policy = tenant.flatMap { ErasurePolicy(rawValue: $0["policy"]) } ?? settings.defaultPolicy
        if let requested = request.requestedPolicy { policy = policy.atLeast(requested) }
        // A failed refresh means the data can no longer be kept current: it goes, at least scrubbed.
        if request.cause == .refreshFailed { policy = policy.atLeast(.scrub) }
        let days: Int = tenant?["deadline_days"] ?? settings.defaultDeadlineDays
        let deadline = now.addingTimeInterval(Double(days) * settings.daySeconds)
        let id = Self.makeErasureId(at: now, forSubject: request.subjectKey, partitions: settings.partitions)
        // With participants declared, the erasure is inserted already dispatched: one INSERT in its final state
        // instead of an insert as pending and an update, which touched every index of the table twice.
        let participants = try cache.participants(in: db)
        let dispatched = !participants.isEmpty
        try db.cachedStatement(sql: """
            INSERT INTO erasures (id, tenant_id, app_id, account_id, subject, policy, cause, status, deadline,
                issued_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                id, request.tenantId, request.appId, request.accountId,
                keys.subject(appId: request.appId, accountId: request.accountId), policy.rawValue,
                request.cause.rawValue,
                dispatched ? ErasureStatus.dispatched.rawValue : ErasureStatus.pending.rawValue,
                deadline.timeIntervalSince1970, dispatched ? t : nil, t, t,
            ])
        if dispatched {
            try insertParticipants(participants, of: id, at: t, in: db)
            try enqueue(
                EraseSubject(
                    erasureId: id, tenantId: request.tenantId, appId: request.appId, accountId: request.accountId,
                    policy: policy, cause: request.cause, issuedAt: Date(timeIntervalSince1970: t),
                    deadline: deadline),
                in: db)
        }
        return id
    }

    /// Upgrades open erasure `id` to cause `atlassian-closed`. Its policy stays (a refresh-failed or requested
    /// erasure's policy is already at least the tenant's, which is what a closed status would get). A pending one is
    /// simply dispatched later with the new cause. A dispatched one gets a new command id: participants are idempotent
    /// by the command's `erasureId`, so a command re-sent under the old one would be answered from what they recorded
    /// under the old cause (and the old command is still on the topic, ahead of any re-send) — the closed account's
    /// extra duties (suppression, no accountId kept under any policy) would never be applied. Under the new id every
    /// participant applies the command with cause `atlassian-closed` and acknowledges it; acks of the old id no longer
    /// count, outcomes recorded under the old cause are cleared (a waived participant stays waived). The ledger, the
    /// API, the audit entry and `ErasureCompleted` keep the erasure's own id, with the final cause: one erasure.
    private func upgradeToClosed(
        _ id: String, of request: IntakeRequest, status: String, at t: Double, in db: GRDB.Database
    ) throws {
        guard status != ErasureStatus.pending.rawValue else {
            try db.cachedStatement(sql: "UPDATE erasures SET cause = ?, updated_at = ? WHERE id = ?")
                .execute(arguments: [ErasureCause.atlassianClosed.rawValue, t, id])
            return
        }
        let commandId = Self.makeErasureId(
            at: Date(timeIntervalSince1970: t), forSubject: request.subjectKey, partitions: settings.partitions)
        try db.cachedStatement(sql: "UPDATE erasures SET cause = ?, command_id = ?, updated_at = ? WHERE id = ?")
            .execute(arguments: [ErasureCause.atlassianClosed.rawValue, commandId, t, id])
        try db.cachedStatement(sql: """
            UPDATE erasure_participants SET outcome = NULL, detail = NULL, acked_at = NULL, failed_attempts = 0,
                sends = sends + 1, last_sent_at = ?
            WHERE erasure_id = ? AND (outcome IS NULL OR outcome != 'waived')
            """).execute(arguments: [t, id])
        try db.cachedStatement(sql: "UPDATE erasures SET status = 'dispatched' WHERE id = ?").execute(arguments: [id])
        try enqueueCommand(id, in: db)
    }
}
