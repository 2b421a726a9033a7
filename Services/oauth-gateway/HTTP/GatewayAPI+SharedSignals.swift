import Contracts
import Foundation
import Hummingbird
import ServiceKit

extension GatewayAPI {
    // MARK: Shared Signals (SSF 1.0 transmitter; docs/shared-signals.md)

    /// Discovery, and the stream a tenant manages with its own access token: configuration, status, verification,
    /// and poll delivery (RFC 8936). Errors are the house shape; the poll endpoint answers RFC 8936's.
    static func addSharedSignalsRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        addDiscovery("/.well-known/ssf-configuration", gateway.sharedSignalsConfiguration(), to: router)
        addStreamRoutes(to: router, gateway: gateway, issuer: issuer)
        addStreamStatusRoutes(to: router, gateway: gateway, issuer: issuer)
        router.post(RouterPath(stringLiteral: SecurityEvents.pollPath + "/:stream")) { request, context -> Response in
            try await poll(request, stream: context.parameters.get("stream"), gateway: gateway, issuer: issuer)
        }
    }

    /// A tenant's stream: create, read, change (PATCH) or replace (PUT), delete (SSF 1.0 §8.1.1).
    static func addStreamRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.post("/ssf/streams") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            let body = try await decode(Gateway.StreamRequest.self, request, reason: streamBodyRule)
            let record = try streamRecord(body, tenantId: tenantId, current: nil, gateway: gateway)
            do {
                try await gateway.database.createStream(record)
            } catch GatewayDatabase.StreamError.exists {
                throw HTTPError(.conflict, message: "this tenant has a stream already (one per tenant); change or delete it")
            }
            gateway.logger.info("security event stream created", metadata: ["tenant": "\(tenantId)"])
            return try json(gateway.streamConfiguration(record), status: .created)
        }

        router.get("/ssf/streams") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            let stream = try await gateway.database.stream(ofTenant: tenantId)
            // SSF 1.0 §8.1.1.2: with stream_id, that stream; without, every stream of the receiver (here one or none).
            guard let wanted = FormFields(query: request)["stream_id"] else {
                return try json(stream.map { [gateway.streamConfiguration($0)] } ?? [])
            }
            guard let stream, stream.streamId == wanted else { throw HTTPError(.notFound, message: "no such stream") }
            return try json(gateway.streamConfiguration(stream))
        }

        for (method, replaces) in [(HTTPRequest.Method.patch, false), (.put, true)] {
            router.on("/ssf/streams", method: method) { request, _ -> Response in
                let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
                var body = try await decode(Gateway.StreamRequest.self, request, reason: streamBodyRule)
                let current = try await ownStream(body.streamId, tenantId: tenantId, gateway: gateway)
                // A replacement omits nothing: without delivery the stream is polled, as a new one would be.
                if replaces, body.delivery == nil { body.delivery = .init(method: SecurityEvents.DeliveryMethod.poll.rawValue) }
                var record = try streamRecord(body, tenantId: tenantId, current: current, gateway: gateway)
                if replaces {
                    record.eventsRequested = body.eventsRequested ?? []
                    record.description = body.description
                }
                try await gateway.database.updateStream(record)
                return try json(gateway.streamConfiguration(record))
            }
        }

        router.delete("/ssf/streams") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            let stream = try await ownStream(FormFields(query: request)["stream_id"], tenantId: tenantId, gateway: gateway)
            try await gateway.database.deleteStream(stream.streamId, tenantId: tenantId)
            gateway.logger.info("security event stream deleted", metadata: ["tenant": "\(tenantId)"])
            return Response(status: .noContent)
        }
    }

    /// A stream's status (read, or set by the receiver) and its verification event (SSF 1.0 §8.1.2, §8.1.4).
    static func addStreamStatusRoutes(to router: Router<LetheRequestContext>, gateway: Gateway, issuer: String) {
        router.get("/ssf/status") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            let stream = try await ownStream(FormFields(query: request)["stream_id"], tenantId: tenantId, gateway: gateway)
            return try json(try await statusView(stream, gateway: gateway))
        }

        router.post("/ssf/status") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            struct Body: Decodable {
                var streamId: String
                var status: String
                var reason: String?
                enum CodingKeys: String, CodingKey { case status, reason, streamId = "stream_id" }
            }
            let body = try await decode(
                Body.self, request, reason: "body must be JSON {stream_id, status: enabled|paused|disabled, reason?}")
            guard let status = SecurityEvents.StreamStatus(rawValue: body.status) else {
                throw HTTPError(.badRequest, message: "status must be enabled, paused or disabled")
            }
            guard (body.reason?.count ?? 0) <= 256 else {
                throw HTTPError(.badRequest, message: "reason must be at most 256 characters")
            }
            var stream = try await ownStream(body.streamId, tenantId: tenantId, gateway: gateway)
            let event = SecurityEventClaims.make(
                .streamUpdated, payload: SecurityEventPayload(status: status.rawValue, reason: body.reason),
                subject: .stream(stream.streamId), audience: tenantId, issuer: "", txn: nil)
            try await gateway.database.setStreamStatus(
                stream.streamId, tenantId: tenantId, status: status, reason: body.reason, event: event)
            stream.status = status
            stream.reason = body.reason
            return try json(try await statusView(stream, gateway: gateway))
        }

        router.post("/ssf/verify") { request, _ -> Response in
            let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
            struct Body: Decodable {
                var streamId: String
                var state: String?
                enum CodingKeys: String, CodingKey { case state, streamId = "stream_id" }
            }
            let body = try await decode(Body.self, request, reason: "body must be JSON {stream_id, state?}")
            guard (body.state?.count ?? 0) <= 1024 else {
                throw HTTPError(.badRequest, message: "state must be at most 1024 characters")
            }
            let stream = try await ownStream(body.streamId, tenantId: tenantId, gateway: gateway)
            let event = SecurityEventClaims.make(
                .verification, payload: SecurityEventPayload(state: body.state),
                subject: .stream(stream.streamId), audience: tenantId, issuer: "", txn: nil)
            try await gateway.database.enqueueSecurityEvent(event, streamId: stream.streamId)
            return Response(status: .noContent)
        }
    }

    /// Poll delivery (RFC 8936): the receiver acknowledges what it processed (`ack`) or could not (`setErrs`) and gets
    /// the next events (`maxEvents`, at most 100 here; 0: acknowledge only); unless `returnImmediately`, it waits up to
    /// 10 s for some.
    static func poll(_ request: Request, stream streamId: String?, gateway: Gateway, issuer: String) async throws
        -> Response
    {
        let tenantId = try await streamTenant(request, gateway: gateway, issuer: issuer)
        let stream = try await ownStream(streamId, tenantId: tenantId, gateway: gateway)
        guard stream.method == .poll else {
            throw HTTPError(.badRequest, message: "this stream is delivered by push, not poll")
        }
        struct Body: Decodable {
            var ack: [String]?
            var setErrs: [String: [String: String]]?
            var maxEvents: Int?
            var returnImmediately: Bool?
        }
        let body = try await decode(
            Body.self, request, reason: "body must be JSON {ack?, setErrs?, maxEvents?, returnImmediately?}")
        let max = min(max(body.maxEvents ?? 100, 0), 100)
        let deadline = ContinuousClock.now + .seconds(10)
        var acknowledged = body.ack ?? []
        var refused = Array((body.setErrs ?? [:]).keys)
        while true {
            let (events, more) = try await gateway.database.poll(
                streamId: stream.streamId, acknowledged: acknowledged, refused: refused,
                max: stream.status == .enabled ? max : 0)
            (acknowledged, refused) = ([], [])
            if !events.isEmpty || body.returnImmediately == true || max == 0 || ContinuousClock.now >= deadline {
                var sets: [String: String] = [:]
                for event in events { sets[event.jti] = try await gateway.signedSecurityEvent(event) }
                struct Answer: Encodable {
                    var sets: [String: String]
                    var moreAvailable: Bool
                }
                return try json(Answer(sets: sets, moreAvailable: more))
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    static let streamBodyRule = """
        body must be JSON {delivery: {method, endpoint_url?, authorization_header?}, events_requested: [uri…], \
        description?} (with stream_id to change a stream)
        """

    /// The tenant of the request's bearer token (a tenant access token).
    private static func streamTenant(_ request: Request, gateway: Gateway, issuer: String) async throws -> String {
        try await bearerTenant(request, gateway: gateway, issuer: issuer).tenantId
    }

    /// The tenant's stream named `streamId`; 400 without one, 404 for another's or none.
    private static func ownStream(_ streamId: String?, tenantId: String, gateway: Gateway) async throws -> StreamRecord {
        guard let streamId, !streamId.isEmpty else { throw HTTPError(.badRequest, message: "stream_id is required") }
        guard let stream = try await gateway.database.stream(ofTenant: tenantId), stream.streamId == streamId else {
            throw HTTPError(.notFound, message: "no such stream")
        }
        return stream
    }

    private static func streamRecord(
        _ body: Gateway.StreamRequest, tenantId: String, current: StreamRecord?, gateway: Gateway
    ) throws -> StreamRecord {
        do {
            return try gateway.streamRecord(for: body, tenantId: tenantId, current: current)
        } catch .invalid(let reason) {
            throw HTTPError(.badRequest, message: reason)
        }
    }

    /// SSF's stream status, with how delivery stands (Lethe's `delivery` member: nothing secret or personal).
    private static func statusView(_ stream: StreamRecord, gateway: Gateway) async throws -> StreamStatusView {
        let state = try await gateway.database.streamDeliveryState(stream.streamId)
        return StreamStatusView(
            streamId: stream.streamId, status: stream.status.rawValue, reason: stream.reason,
            delivery: .init(
                pending: state.pending, dead: state.dead,
                oldestPendingAt: state.oldestPendingAt.map(RFC3339.string(from:)), lastError: state.lastError,
                lastDeliveredAt: state.lastDeliveredAt.map(RFC3339.string(from:))))
    }

    /// SSF's own documents (snake_case members, URLs in values): keys sorted and slashes unescaped, as the discovery
    /// documents are, rather than through the house encoder.
    private static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
    }
}

struct StreamStatusView: Codable, Equatable {
    struct Delivery: Codable, Equatable {
        var pending: Int
        var dead: Int
        var oldestPendingAt: String?
        var lastError: String?
        var lastDeliveredAt: String?

        enum CodingKeys: String, CodingKey {
            case pending, dead
            case oldestPendingAt = "oldest_pending_at"
            case lastError = "last_error"
            case lastDeliveredAt = "last_delivered_at"
        }
    }

    var streamId: String
    var status: String
    var reason: String?
    var delivery: Delivery

    enum CodingKeys: String, CodingKey {
        case status, reason, delivery
        case streamId = "stream_id"
    }
}
