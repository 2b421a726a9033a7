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
        guard let active = lease.peers.directory.active else {
            throw Self.standby("and which replica is active is not known yet")
        }
        guard let base = internalListener ? active.internalUrl : active.url else {
            throw Self.standby("and the active replica announced no internal listener")
        }
        return try await lease.peers.forwarder.forward(request, to: base, context: context)
    }

    static func standby(_ why: String) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "5"], message: "this replica is a standby, \(why)")
    }
}

/// Sends a request this replica received to another replica — a standby's to the active one, or one about a partition
/// to its owner — streaming both bodies, and turns the answer into this replica's response; or asks other replicas the
/// same question and collects their answers (``gather(_:from:context:uri:body:headers:)``). Its own HTTP client never
/// follows redirects (the client must see them) and gives up on a replica that does not accept the connection within
/// 2 s. The client exists while ``ReplicaPeers`` runs (``start()`` to ``shutdown()``): a service built and never run
/// leaves nothing to shut down.
package final class ReplicaForwarder: Sendable {
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

    package func start() {
        client.withLock { client in
            guard client == nil else { return }
            client = HTTPClient(
                eventLoopGroupProvider: .singleton,
                configuration: HTTPClient.Configuration(
                    redirectConfiguration: .disallow, timeout: .init(connect: .seconds(2), read: .seconds(60))))
        }
    }

    package func shutdown() async {
        let running = client.withLock { client in
            defer { client = nil }
            return client
        }
        try? await running?.shutdown()
    }

    /// Forwards `request` to the replica at `base` and passes its answer back; `body` replaces the request's own when
    /// the route already read it. 503 when that replica does not answer.
    package func forward(
        _ request: Request, to base: String, context: LetheRequestContext, body: ByteBuffer? = nil
    ) async throws -> Response {
        var outgoing = try outgoingRequest(request, to: base, context: context)
        if let body {
            outgoing.body = .bytes(body)
        } else if let length = request.headers[.contentLength].flatMap({ Int64($0) }) {
            if length > 0 { outgoing.body = .stream(request.body, length: .known(length)) }
        } else if request.headers[.transferEncoding] != nil {
            outgoing.body = .stream(request.body, length: .unknown)
        }
        let answer = try await execute(outgoing, base: base)
        return Response(
            status: HTTPResponse.Status(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase),
            headers: Self.returnedHeaders(answer.headers), body: ResponseBody(asyncSequence: answer.body))
    }

    /// One replica's answer to a question several were asked.
    package struct Answer: Sendable {
        package var replica: String
        package var status: Int
        package var body: ByteBuffer
    }

    /// Asks each replica of `bases` (replica id → base URL) the question `request` asks — its method, path and query
    /// (or `uri`), its headers, with `body` and `headers` added — concurrently, and returns their answers (bodies up
    /// to 32 MiB). 503 when one does not answer: an answer that leaves a replica out would look whole and be wrong.
    package func gather(
        _ request: Request, from bases: [String: String], context: LetheRequestContext, uri: String? = nil,
        body: ByteBuffer? = nil, headers: [(String, String)] = []
    ) async throws -> [Answer] {
        let outgoing = try bases.map { replica, base in
            var outgoing = try outgoingRequest(request, to: base, context: context)
            if let uri { outgoing.url = base + uri }
            outgoing.headers.remove(name: "content-length")
            if let body { outgoing.body = .bytes(body) }
            for (name, value) in headers { outgoing.headers.replaceOrAdd(name: name, value: value) }
            return (replica, base, outgoing)
        }
        return try await withThrowingTaskGroup(of: Answer.self) { group in
            for (replica, base, request) in outgoing {
                group.addTask {
                    let answer = try await self.execute(request, base: base)
                    let body = try await answer.body.collect(upTo: 32 * 1024 * 1024)
                    return Answer(replica: replica, status: Int(answer.status.code), body: body)
                }
            }
            var answers: [Answer] = []
            for try await answer in group { answers.append(answer) }
            return answers
        }
    }

    /// The request as sent on to another replica: what the client sent, but the connection's own headers, and who
    /// forwarded it.
    private func outgoingRequest(_ request: Request, to base: String, context: LetheRequestContext) throws
        -> HTTPClientRequest
    {
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
        // The other replica sees this one as the peer: it names the client this one saw, which the gateway's
        // per-IP limits believe when GATEWAY_TRUSTED_PROXIES lists the replicas' network.
        if let peer = context.remoteAddress?.ipAddress {
            outgoing.headers.add(name: "X-Forwarded-For", value: peer)
        }
        return outgoing
    }

    private func execute(_ outgoing: HTTPClientRequest, base: String) async throws -> HTTPClientResponse {
        guard let client = client.withLock({ $0 }) else {
            // Before ReplicaPeers runs or after it stopped: this replica is starting or stopping.
            throw HTTPError(
                .serviceUnavailable, headers: [.retryAfter: "5"],
                message: "this replica cannot reach the other replicas yet: it is starting or stopping")
        }
        do {
            let answer = try await client.execute(outgoing, deadline: .now() + .seconds(60), logger: logger)
            forwarded.increment()
            return answer
        } catch {
            failed.increment()
            logger.warning("another replica did not answer a forwarded request", metadata: [
                "replica.url": "\(base)", "error": "\(error)",
            ])
            throw HTTPError(
                .serviceUnavailable, headers: [.retryAfter: "5"], message: "the replica at \(base) did not answer")
        }
    }

    private static func returnedHeaders(_ answer: NIOHTTP1.HTTPHeaders) -> HTTPFields {
        var headers = HTTPFields()
        for header in answer where !Self.notReturned.contains(header.name.lowercased()) {
            if let name = HTTPField.Name(header.name) { headers.append(HTTPField(name: name, value: header.value)) }
        }
        return headers
    }
}
