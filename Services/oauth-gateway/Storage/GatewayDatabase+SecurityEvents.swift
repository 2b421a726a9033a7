import Contracts
import Crypto
import Foundation
import GRDB

/// A tenant's Shared Signals stream as stored.
struct StreamRecord: Sendable, Equatable {
    var streamId: String
    var tenantId: String
    var method: SecurityEvents.DeliveryMethod
    /// The receiver's push endpoint; nil for poll delivery.
    var endpointURL: String?
    /// The `Authorization` header value for pushes, sealed (``SecretBox``).
    var sealedAuthorization: Data?
    var eventsRequested: [String]
    var status: SecurityEvents.StreamStatus
    var reason: String?
    var description: String?
    var lastDeliveredAt: Date?
}

/// A Security Event Token waiting for delivery: its claims (signed at each delivery), in the stream's order.
struct QueuedSecurityEvent: Sendable, Equatable {
    var seq: Int64
    var streamId: String
    var jti: String
    var claims: Data
    var attempts: Int
    var createdAt: Date
}

/// How a stream's delivery stands, for its status and the operator.
struct StreamDeliveryState: Sendable, Equatable {
    var pending: Int
    var dead: Int
    var oldestPendingAt: Date?
    var lastError: String?
    var lastDeliveredAt: Date?
}

extension GatewayDatabase {
    enum StreamError: Error, Equatable {
        /// The tenant has a stream already (one per tenant).
        case exists
        case notFound
    }

    // MARK: Streams

    func createStream(_ stream: StreamRecord, now: Date = Date()) async throws {
        try await database.write { db in
            guard try Self.stream(ofTenant: stream.tenantId, in: db) == nil else { throw StreamError.exists }
            try db.execute(
                sql: """
                    INSERT INTO ssf_streams (stream_id, tenant_id, delivery_method, endpoint_url, authorization_header,
                        events_requested, status, reason, description, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    stream.streamId, stream.tenantId, stream.method.rawValue, stream.endpointURL,
                    stream.sealedAuthorization, stream.eventsRequested.joined(separator: " "), stream.status.rawValue,
                    stream.reason, stream.description, now.timeIntervalSince1970, now.timeIntervalSince1970,
                ])
        }
    }

    func stream(ofTenant tenantId: String) async throws -> StreamRecord? {
        try await database.read { db in try Self.stream(ofTenant: tenantId, in: db) }
    }

    /// Every tenant's stream, by tenant (the operator's view).
    func streams() async throws -> [StreamRecord] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ssf_streams ORDER BY tenant_id").map(Self.streamRecord)
        }
    }

    /// Replaces what a receiver may change: delivery, events requested, description.
    func updateStream(_ stream: StreamRecord, now: Date = Date()) async throws {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE ssf_streams SET delivery_method = ?, endpoint_url = ?, authorization_header = ?,
                        events_requested = ?, description = ?, updated_at = ?
                    WHERE stream_id = ? AND tenant_id = ?
                    """,
                arguments: [
                    stream.method.rawValue, stream.endpointURL, stream.sealedAuthorization,
                    stream.eventsRequested.joined(separator: " "), stream.description, now.timeIntervalSince1970,
                    stream.streamId, stream.tenantId,
                ])
            guard db.changesCount == 1 else { throw StreamError.notFound }
        }
    }

    /// Deletes the stream and every event waiting on it.
    func deleteStream(_ streamId: String, tenantId: String) async throws {
        try await database.write { db in
            try db.execute(
                sql: "DELETE FROM ssf_streams WHERE stream_id = ? AND tenant_id = ?", arguments: [streamId, tenantId])
            guard db.changesCount == 1 else { throw StreamError.notFound }
            try db.execute(sql: "DELETE FROM ssf_events WHERE stream_id = ?", arguments: [streamId])
        }
    }

    /// Sets the stream's status and queues `event` (its stream-updated event) in the same transaction.
    func setStreamStatus(
        _ streamId: String, tenantId: String, status: SecurityEvents.StreamStatus, reason: String?,
        event: SecurityEventClaims, now: Date = Date()
    ) async throws {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE ssf_streams SET status = ?, reason = ?, updated_at = ? WHERE stream_id = ? AND tenant_id = ?",
                arguments: [status.rawValue, reason, now.timeIntervalSince1970, streamId, tenantId])
            guard db.changesCount == 1 else { throw StreamError.notFound }
            try Self.enqueue(event, streamId: streamId, now: now, in: db)
        }
    }

    /// Queues an event on a stream (verification), whatever it requested.
    func enqueueSecurityEvent(_ claims: SecurityEventClaims, streamId: String, now: Date = Date()) async throws {
        try await database.write { db in try Self.enqueue(claims, streamId: streamId, now: now, in: db) }
    }

    /// Every stream and how its delivery stands (the operator's view and metrics).
    func streamDeliveryState(_ streamId: String) async throws -> StreamDeliveryState {
        try await database.read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT count(*) FILTER (WHERE dead_at IS NULL) AS pending,
                        count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
                        min(created_at) FILTER (WHERE dead_at IS NULL) AS oldest,
                        (SELECT last_error FROM ssf_streams WHERE stream_id = ?1) AS last_error,
                        (SELECT last_delivered_at FROM ssf_streams WHERE stream_id = ?1) AS delivered
                    FROM ssf_events WHERE stream_id = ?1
                    """,
                arguments: [streamId])
            return StreamDeliveryState(
                pending: row?["pending"] ?? 0, dead: row?["dead"] ?? 0,
                oldestPendingAt: (row?["oldest"] as Double?).map(Date.init(timeIntervalSince1970:)),
                lastError: row?["last_error"],
                lastDeliveredAt: (row?["delivered"] as Double?).map(Date.init(timeIntervalSince1970:)))
        }
    }

    // MARK: Push delivery

    /// The next event of each enabled push stream, when it is due: a stream's events go strictly in order, so a
    /// receiver that fails holds back only its own stream.
    func duePushEvents(now: Date = Date(), limit: Int = 100) async throws -> [(QueuedSecurityEvent, StreamRecord)] {
        try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT e.*, s.* FROM ssf_streams s
                    JOIN ssf_events e ON e.seq = (SELECT min(seq) FROM ssf_events
                        WHERE stream_id = s.stream_id AND dead_at IS NULL)
                    WHERE s.status = 'enabled' AND s.delivery_method = ? AND e.next_attempt_at <= ?
                    LIMIT ?
                    """,
                arguments: [SecurityEvents.DeliveryMethod.push.rawValue, now.timeIntervalSince1970, limit]
            ).map { (Self.queuedEvent($0), try Self.streamRecord($0)) }
        }
    }

    /// The receiver took the event: it leaves the queue.
    func securityEventDelivered(_ seq: Int64, streamId: String, now: Date = Date()) async throws {
        try await database.write { db in
            try db.execute(sql: "DELETE FROM ssf_events WHERE seq = ?", arguments: [seq])
            try db.execute(
                sql: "UPDATE ssf_streams SET last_delivered_at = ? WHERE stream_id = ?",
                arguments: [now.timeIntervalSince1970, streamId])
        }
    }

    /// A delivery failed: `error` (no secret, no personal data) and when to try again; `dead` gives it up (kept,
    /// counted, shown to the operator) so the stream's next events go.
    func securityEventFailed(
        _ seq: Int64, streamId: String, error: String, retryAt: Date, dead: Bool, now: Date = Date()
    ) async throws {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE ssf_streams SET last_error = ? WHERE stream_id = ?", arguments: [error, streamId])
            try db.execute(
                sql: """
                    UPDATE ssf_events SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, dead_at = ?
                    WHERE seq = ?
                    """,
                arguments: [error, retryAt.timeIntervalSince1970, dead ? now.timeIntervalSince1970 : nil, seq])
        }
    }

    // MARK: Expiry

    /// Gives up the poll streams' events queued before `pollQueuedBefore` (dead, as a push event past its retries)
    /// and deletes the events given up before `deadBefore`; how many of each.
    func expireSecurityEvents(
        pollQueuedBefore: Date, deadBefore: Date, now: Date = Date()
    ) async throws -> (givenUp: Int, deleted: Int) {
        try await database.write { db in
            try db.execute(
                sql: """
                    UPDATE ssf_events SET dead_at = ?, last_error = 'not polled in time'
                    WHERE dead_at IS NULL AND created_at < ?
                      AND stream_id IN (SELECT stream_id FROM ssf_streams WHERE delivery_method = ?)
                    """,
                arguments: [now.timeIntervalSince1970, pollQueuedBefore.timeIntervalSince1970,
                            SecurityEvents.DeliveryMethod.poll.rawValue])
            let givenUp = db.changesCount
            try db.execute(
                sql: "DELETE FROM ssf_events WHERE dead_at IS NOT NULL AND dead_at < ?",
                arguments: [deadBefore.timeIntervalSince1970])
            return (givenUp, db.changesCount)
        }
    }

    // MARK: Poll delivery (RFC 8936)

    /// Removes the events the receiver acknowledged (`ack`) or refused (`errors`), then returns up to `max` of the
    /// stream's next events and whether more wait.
    func poll(
        streamId: String, acknowledged: [String], refused: [String], max: Int
    ) async throws -> (events: [QueuedSecurityEvent], more: Bool) {
        try await database.write { db in
            for jti in acknowledged + refused {
                try db.execute(
                    sql: "DELETE FROM ssf_events WHERE stream_id = ? AND jti = ?", arguments: [streamId, jti])
            }
            if !acknowledged.isEmpty {
                try db.execute(
                    sql: "UPDATE ssf_streams SET last_delivered_at = ? WHERE stream_id = ?",
                    arguments: [Date().timeIntervalSince1970, streamId])
            }
            let rows = try Row.fetchAll(
                db,
                sql: "SELECT * FROM ssf_events WHERE stream_id = ? AND dead_at IS NULL ORDER BY seq LIMIT ?",
                arguments: [streamId, max + 1])
            return (rows.prefix(max).map(Self.queuedEvent), rows.count > max)
        }
    }

    // MARK: Erasures → events

    /// Inside an erasure's transaction (``erase(_:now:)``): remembers which of the tenant's users the erasure
    /// concerns, for its `account-purged`, and queues `account-disabled` when the tenant's stream asks for it. A later
    /// command for the same subject (its cause upgraded, a new erasure id) finds no connection any more and moves the
    /// remembered users to the new erasure id.
    static func noteErasure(_ command: EraseSubject, userIds: [String], now: Date, in db: GRDB.Database) throws {
        guard let stream = try stream(ofTenant: command.tenantId, in: db), stream.status != .disabled else { return }
        let digest = subjectDigest(command)
        guard !userIds.isEmpty else {
            try db.execute(
                sql: "UPDATE ssf_erasure_subjects SET erasure_id = ? WHERE subject_digest = ?",
                arguments: [command.erasureId, digest])
            return
        }
        for userId in userIds {
            try db.execute(
                sql: """
                    INSERT INTO ssf_erasure_subjects (subject_digest, user_id, tenant_id, erasure_id, created_at)
                    VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (subject_digest, user_id) DO UPDATE SET erasure_id = excluded.erasure_id
                    """,
                arguments: [digest, userId, command.tenantId, command.erasureId, now.timeIntervalSince1970])
            guard stream.eventsRequested.contains(SecurityEvents.EventType.accountDisabled.rawValue) else { continue }
            let claims = SecurityEventClaims.make(
                .accountDisabled,
                payload: SecurityEventPayload(
                    policy: command.policy.rawValue, cause: command.cause.rawValue,
                    eventTimestamp: Int(now.timeIntervalSince1970)),
                subject: .user(userId, issuer: ""), audience: command.tenantId, issuer: "", txn: command.erasureId)
            try enqueue(claims, streamId: stream.streamId, now: now, in: db)
        }
    }

    /// An erasure completed: queues `account-purged` for each user it concerned (when the tenant's stream asks for
    /// it) and forgets them. Returns how many events were queued.
    @discardableResult
    func noteErasureCompleted(_ completed: ErasureCompleted, now: Date = Date()) async throws -> Int {
        try await database.write { db in
            let users = try String.fetchAll(
                db, sql: "SELECT user_id FROM ssf_erasure_subjects WHERE erasure_id = ? ORDER BY user_id",
                arguments: [completed.erasureId])
            guard !users.isEmpty else { return 0 }
            try db.execute(sql: "DELETE FROM ssf_erasure_subjects WHERE erasure_id = ?", arguments: [completed.erasureId])
            guard let stream = try Self.stream(ofTenant: completed.tenantId, in: db), stream.status != .disabled,
                  stream.eventsRequested.contains(SecurityEvents.EventType.accountPurged.rawValue)
            else { return 0 }
            for userId in users {
                let claims = SecurityEventClaims.make(
                    .accountPurged,
                    payload: SecurityEventPayload(
                        policy: completed.policy.rawValue, cause: completed.cause.rawValue,
                        eventTimestamp: Int(completed.completedAt.timeIntervalSince1970)),
                    subject: .user(userId, issuer: ""), audience: completed.tenantId, issuer: "",
                    txn: completed.erasureId)
                try Self.enqueue(claims, streamId: stream.streamId, now: now, in: db)
            }
            return users.count
        }
    }

    // MARK: Profile changes → events

    /// Inside a profile refresh's transaction: queues `profile-changed` for the user when the tenant's stream asks
    /// for it.
    static func noteProfileChange(
        _ change: ProfileChange, tenantId: String, userId: String, now: Date, in db: GRDB.Database
    ) throws {
        guard let stream = try stream(ofTenant: tenantId, in: db), stream.status != .disabled,
              stream.eventsRequested.contains(SecurityEvents.EventType.profileChanged.rawValue)
        else { return }
        let claims = SecurityEventClaims.make(
            .profileChanged,
            payload: SecurityEventPayload(eventTimestamp: Int(now.timeIntervalSince1970), changedFields: change.fields),
            subject: .user(userId, issuer: ""), audience: tenantId, issuer: "", txn: nil)
        try enqueue(claims, streamId: stream.streamId, now: now, in: db)
    }

    // MARK: Rows

    private static func enqueue(
        _ claims: SecurityEventClaims, streamId: String, now: Date, in db: GRDB.Database
    ) throws {
        try db.execute(
            sql: """
                INSERT INTO ssf_events (stream_id, jti, claims, created_at, next_attempt_at, attempts)
                VALUES (?, ?, ?, ?, ?, 0)
                """,
            arguments: [streamId, claims.jti, try JSONEncoder().encode(claims), now.timeIntervalSince1970,
                        now.timeIntervalSince1970])
    }

    static func stream(ofTenant tenantId: String, in db: GRDB.Database) throws -> StreamRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM ssf_streams WHERE tenant_id = ?", arguments: [tenantId])
            .map(streamRecord)
    }

    /// Which tenant, app and account an erasure concerns, as a digest: the link to its users without the accountId.
    private static func subjectDigest(_ command: EraseSubject) -> Data {
        Data(SHA256.hash(data: Data("\(command.tenantId)\n\(command.appId)\n\(command.accountId)".utf8)))
    }

    private static func streamRecord(_ row: Row) throws -> StreamRecord {
        StreamRecord(
            streamId: row["stream_id"], tenantId: row["tenant_id"],
            method: SecurityEvents.DeliveryMethod(rawValue: row["delivery_method"]) ?? .push,
            endpointURL: row["endpoint_url"], sealedAuthorization: row["authorization_header"],
            eventsRequested: (row["events_requested"] as String).split(separator: " ").map(String.init),
            status: SecurityEvents.StreamStatus(rawValue: row["status"]) ?? .enabled, reason: row["reason"],
            description: row["description"],
            lastDeliveredAt: (row["last_delivered_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    private static func queuedEvent(_ row: Row) -> QueuedSecurityEvent {
        QueuedSecurityEvent(
            seq: row["seq"], streamId: row["stream_id"], jti: row["jti"], claims: row["claims"],
            attempts: row["attempts"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }
}
