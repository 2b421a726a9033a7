import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle

/// Push delivery of Security Event Tokens (RFC 8935): each enabled push stream's events, strictly in order, POSTed
/// to the receiver as `application/secevent+jwt` with the stream's `Authorization` header. A 2xx answer removes the
/// event; anything else — an RFC 8935 error, a 5xx, no answer — is retried with a capped exponential backoff (1, 2,
/// 4 … s up to `maxBackoff`), and only that stream waits. The queue is in SQLite, so a restart loses nothing and
/// resumes the backoff where it was. An event still undelivered `retryFor` after it was queued is given up (`dead`:
/// kept and counted in the stream's state and `lethe_ssf_events_dead_total`) and the stream's next events go on.
struct SecurityEventDelivery: Service {
    struct Settings: Sendable {
        var retryFor: TimeInterval = 3 * 86_400
        var maxBackoff: TimeInterval = 3600
        var idleInterval: Duration = .milliseconds(250)
        /// How long a given-up event stays (counted in its stream's `dead`, for the operator) before it is deleted.
        var keepDeadFor: TimeInterval = 30 * 86_400
        /// How often events are expired: poll streams' events unacknowledged `retryFor` after they were queued, and
        /// dead events past `keepDeadFor`.
        var expiryInterval: TimeInterval = 60
    }

    let gateway: Gateway
    let httpClient: HTTPClient
    let settings: Settings
    let logger: Logger
    private var database: GatewayDatabase { gateway.database }

    func run() async throws {
        var lastExpiry = Date.distantPast
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            var delivered = 0
            do {
                if Date().timeIntervalSince(lastExpiry) >= settings.expiryInterval {
                    lastExpiry = Date()
                    try await expire(now: lastExpiry)
                }
                delivered = try await round()
            } catch {
                logger.warning("a security event delivery round failed", metadata: ["error": "\(type(of: error))"])
            }
            if delivered > 0 { continue }  // each stream's next event may be due at once
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: settings.idleInterval) }
            } catch {
                return
            }
        }
    }

    /// A poll stream's receiver that stops polling is treated as a push receiver that stops answering: its events are
    /// given up `retryFor` after they were queued (counted, shown in its status). Events given up more than
    /// `keepDeadFor` ago are deleted. Neither queue grows for ever.
    func expire(now: Date = Date()) async throws {
        let expiry = try await database.expireSecurityEvents(
            pollQueuedBefore: now.addingTimeInterval(-settings.retryFor),
            deadBefore: now.addingTimeInterval(-settings.keepDeadFor), now: now)
        if expiry.givenUp > 0 {
            Counter(label: "lethe_ssf_events_dead_total").increment(by: expiry.givenUp)
            logger.warning("security events of poll streams given up: not polled in time", metadata: [
                "ssf.events": "\(expiry.givenUp)",
            ])
        }
    }

    /// Tries the next due event of every push stream, streams side by side; returns how many were delivered.
    func round(now: Date = Date()) async throws -> Int {
        let due = try await database.duePushEvents(now: now)
        return await withTaskGroup(of: Bool.self) { group in
            for (event, stream) in due {
                group.addTask { await deliver(event, on: stream) }
            }
            var delivered = 0
            for await ok in group where ok { delivered += 1 }
            return delivered
        }
    }

    private func deliver(_ event: QueuedSecurityEvent, on stream: StreamRecord) async -> Bool {
        let failure: String
        do {
            guard let endpoint = stream.endpointURL else { throw NoEndpoint() }
            var request = HTTPClientRequest(url: endpoint)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/secevent+jwt")
            request.headers.add(name: "Accept", value: "application/json")
            if let sealed = stream.sealedAuthorization {
                request.headers.add(
                    name: "Authorization",
                    value: try gateway.box.openString(
                        sealed, context: SecurityEvents.authorizationContext(streamId: stream.streamId)))
            }
            request.body = .bytes(ByteBuffer(string: try await gateway.signedSecurityEvent(event)))
            let response = try await httpClient.execute(request, timeout: .seconds(10))
            let body = try? await response.body.collect(upTo: 4096)
            if (200..<300).contains(response.status.code) {
                try await database.securityEventDelivered(event.seq, streamId: stream.streamId)
                Counter(label: "lethe_ssf_events_delivered_total", dimensions: [("method", "push")]).increment()
                return true
            }
            failure = Self.describe(status: Int(response.status.code), body: body.map { Data(buffer: $0) })
        } catch {
            failure = "no answer (\(type(of: error)))"
        }
        let now = Date()
        let dead = now.timeIntervalSince(event.createdAt) >= settings.retryFor
        let backoff = min(settings.maxBackoff, pow(2, Double(min(event.attempts, 30))))
        do {
            try await database.securityEventFailed(
                event.seq, streamId: stream.streamId, error: failure, retryAt: now.addingTimeInterval(backoff), dead: dead, now: now)
        } catch {
            logger.warning("recording a failed security event delivery failed", metadata: ["error": "\(type(of: error))"])
        }
        Counter(label: "lethe_ssf_delivery_failures_total").increment()
        if dead {
            Counter(label: "lethe_ssf_events_dead_total").increment()
            logger.error("a security event was given up after its retry period", metadata: [
                "ssf.stream": "\(stream.streamId)", "ssf.jti": "\(event.jti)", "ssf.error": "\(failure)",
            ])
        } else {
            logger.info("a security event push failed; it will be retried", metadata: [
                "ssf.stream": "\(stream.streamId)", "ssf.attempts": "\(event.attempts + 1)", "ssf.error": "\(failure)",
                "ssf.retry_in_s": "\(Int(backoff))",
            ])
        }
        return false
    }

    /// `HTTP 400 invalid_key: …` from an RFC 8935 error body, else the status alone. The receiver's description is
    /// cut short: it is shown to operators, and a receiver's text is not to be trusted with more room.
    static func describe(status: Int, body: Data?) -> String {
        struct ErrorBody: Decodable {
            var err: String?
            var description: String?
        }
        guard let body, let error = try? JSONDecoder().decode(ErrorBody.self, from: body), let code = error.err else {
            return "HTTP \(status)"
        }
        let description = error.description.map { ": " + String($0.prefix(200)) } ?? ""
        return "HTTP \(status) \(code.prefix(64))\(description)"
    }

    struct NoEndpoint: Error {}
}
