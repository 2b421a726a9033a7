import Contracts
import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceKit
import ServiceRuntime

/// `POST /v1/tenants/{tenant}/erasures` body (encoded too: a replica asks the owner of a subject's partition).
struct ErasureRequestBody: Codable, Sendable {
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

extension ErasureCounts {
    /// Adds another replica's counts (of its partitions) to these.
    mutating func add(_ other: ErasureCounts) {
        pending += other.pending
        dispatched += other.dispatched
        needsAttention += other.needsAttention
        completed += other.completed
        open += other.open
        overdue += other.overdue
    }
}

extension ParticipantsOverview {
    /// Merges another replica's overview into this one: every replica reads the same declarations and records the
    /// same retirements (with the counts they were published with), but each counts the erasures of its own
    /// partitions — what is awaited adds up, the latest acknowledgement is the latest of all.
    mutating func merge(_ other: ParticipantsOverview) {
        var byName = Dictionary(declared.map { ($0.participant, $0) }, uniquingKeysWith: { a, _ in a })
        for theirs in other.declared {
            guard var mine = byName[theirs.participant] else {
                byName[theirs.participant] = theirs
                continue
            }
            mine.awaited += theirs.awaited
            mine.lastAckAt = [mine.lastAckAt, theirs.lastAckAt].compactMap { $0 }.max()
            byName[theirs.participant] = mine
        }
        declared = byName.values.sorted { $0.participant < $1.participant }
        // A retirement another replica has not recorded yet (or that only it recorded), once. To the second: the
        // API's times have no fraction.
        func key(_ retirement: Retirement) -> String {
            "\(retirement.participant)@\(Int64(retirement.retiredAt.timeIntervalSince1970.rounded(.down)))"
        }
        let known = Set(retirements.map(key))
        retirements += other.retirements.filter { !known.contains(key($0)) }
        retirements.sort { ($0.retiredAt, $0.participant) < ($1.retiredAt, $1.participant) }
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
        partitions: PartitionRouter? = nil, logger: Logger = Logger(label: "erasure-executor"),
        onCompleted: @escaping @Sendable () -> Void = {}
    ) {
        let routes = ErasureRoutes(
            ledger: ledger, verifier: verifier, admin: BearerSecret(adminToken, realm: "admin token"),
            notifier: notifier, gate: gate, metrics: metrics, partitions: partitions, logger: logger,
            onCompleted: onCompleted)
        routes.addErasureRoutes(to: router)
        routes.addTenantRoutes(to: router)
        routes.addParticipantRoutes(to: router)
        routes.addAuditRoutes(to: router)
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
