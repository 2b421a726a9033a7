import AsyncHTTPClient
import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import ServiceKit
import Synchronization

extension HTTPField.Name {
    /// Set on a request a standby forwarded (its replica id): a replica that is not active either answers it 503
    /// instead of forwarding it again, so two replicas that each believe the other active never loop.
    package static let letheForwardedBy = Self("Lethe-Forwarded-By")!
}

/// On a standby replica every route but health and metrics is forwarded to the active replica (``ReplicaDirectory``)
/// and its answer passed back as it is — status, headers, body, redirects not followed — so a client, a load balancer
/// without health checks, or another service resolving the service's name to any replica is answered by the active
/// one. A standby's own storage is not the active replica's, so it never serves a request itself. It answers 503 in
/// the error shape, with `Retry-After`, while no active replica is known, when the active one does not answer (it has
/// just died and no other has taken over yet), and for a request another replica already forwarded.
package struct ActiveReplicaMiddleware: RouterMiddleware {
    package typealias Context = LetheRequestContext
    let lease: ReplicaLease
    /// Whether this is the internal listener's router: its requests go to the active replica's internal listener.
    let internalListener: Bool

    package init(lease: ReplicaLease, internalListener: Bool = false) {
        self.lease = lease
        self.internalListener = internalListener
    }

    package func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let path = request.uri.path
        guard lease.current != .active, !path.hasPrefix("/health/"), path != "/metrics" else {
            return try await next(request, context)
        }
        guard request.headers[.letheForwardedBy] == nil else {
            throw Self.standby("and the request was already forwarded by another replica")
        }
        guard let active = lease.directory.active else {
            throw Self.standby("and which replica is active is not known yet")
        }
        guard let base = internalListener ? active.internalUrl : active.url else {
            throw Self.standby("and the active replica announced no internal listener")
        }
        return try await lease.forwarder.forward(request, to: base, context: context)
    }

    static func standby(_ why: String) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "5"], message: "this replica is a standby, \(why)")
    }
}

/// Sends a request a standby received to the active replica, streaming both bodies, and turns the answer into the
/// standby's response. Its own HTTP client never follows redirects (the client must see them) and gives up on a
/// replica that does not accept the connection within 2 s. The client exists while the lease runs (``start()`` to
/// ``shutdown()``): a service built and never run leaves nothing to shut down.
final class StandbyForwarder: Sendable {
    private let client = Mutex<HTTPClient?>(nil)
    private let replica: String
    private let logger: Logger
    private let forwarded = Counter(label: "lethe_replica_forwarded_total", dimensions: [("outcome", "answered")])
    private let failed = Counter(label: "lethe_replica_forwarded_total", dimensions: [("outcome", "unanswered")])

    /// Headers of one connection, not of the request (RFC 9110 §7.6.1), and the ones the standby sets itself.
    private static let notForwarded: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host",
    ]
    /// Of the answer, also what the standby's own server and request log write (`Server`, `Date`, `X-Request-Id`).
    private static let notReturned = notForwarded.union(["server", "date", "x-request-id"])

    init(replica: String, logger: Logger) {
        self.replica = replica
        self.logger = logger
    }

    func start() {
        client.withLock { client in
            guard client == nil else { return }
            client = HTTPClient(
                eventLoopGroupProvider: .singleton,
                configuration: HTTPClient.Configuration(
                    redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2), read: .seconds(60))))
        }
    }

    func shutdown() async {
        let running = client.withLock { client in
            defer { client = nil }
            return client
        }
        try? await running?.shutdown()
    }

    func forward(_ request: Request, to base: String, context: LetheRequestContext) async throws -> Response {
        guard let client = client.withLock({ $0 }) else {
            throw ActiveReplicaMiddleware.standby("and it is not running yet")
        }
        var outgoing = HTTPClientRequest(url: base + request.uri.string)
        outgoing.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.notForwarded.contains(field.name.canonicalName) {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.replaceOrAdd(name: HTTPField.Name.letheForwardedBy.rawName, value: replica)
        // The request log's id, so one id finds the request in both replicas' logs.
        if case .string(let id)? = context.logger[metadataKey: "request"] {
            outgoing.headers.replaceOrAdd(name: HTTPField.Name.requestId.rawName, value: id)
        }
        // The active replica sees the standby as the peer: it names the client the standby saw, which the gateway's
        // per-IP limits believe when GATEWAY_TRUSTED_PROXIES lists the replicas' network.
        if let peer = context.remoteAddress?.ipAddress {
            outgoing.headers.add(name: "X-Forwarded-For", value: peer)
        }
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }) {
            if length > 0 { outgoing.body = .stream(request.body, length: .known(length)) }
        } else if request.headers[.transferEncoding] != nil {
            outgoing.body = .stream(request.body, length: .unknown)
        }
        let answer: HTTPClientResponse
        do {
            answer = try await client.execute(outgoing, deadline: .now() + .seconds(60), logger: logger)
        } catch {
            failed.increment()
            logger.warning("the active replica did not answer a forwarded request", metadata: [
                "replica.url": "\(base)", "error": "\(error)",
            ])
            throw ActiveReplicaMiddleware.standby("and the active replica did not answer")
        }
        forwarded.increment()
        var headers = HTTPFields()
        for header in answer.headers where !Self.notReturned.contains(header.name.lowercased()) {
            if let name = HTTPField.Name(header.name) { headers.append(HTTPField(name: name, value: header.value)) }
        }
        return Response(
            status: HTTPResponse.Status(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase),
            headers: headers, body: ResponseBody(asyncSequence: answer.body))
    }
}
