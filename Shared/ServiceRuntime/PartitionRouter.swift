import Contracts
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import ServiceKit

/// Where a request is answered, for a service whose replicas own partitions (erasure-executor): a request about one
/// partition's data goes to the replica that owns it (``forwardUnlessOwned(_:context:partition:body:)``), and a
/// question about all of it is asked of every owner and the answers merged by the route
/// (``gather(_:context:uri:body:headers:)``).
/// Owners are those the ``ReplicaDirectory`` knows; this replica's own partitions are what `owned` says now.
///
/// A request another replica forwarded is answered from this replica's partitions only, never forwarded again: one
/// hop, so two replicas with different views of who owns what cannot loop. Such a request about a partition this
/// replica does not own (the partition moved since the other replica looked) is answered 503 with `Retry-After`, as is
/// any request while a rebalance is under way or a partition's owner is not announced yet.
package struct PartitionRouter: Sendable {
    let peers: ReplicaPeers
    let partitionCount: Int
    let owned: @Sendable () -> Set<Int32>?

    /// `owned`: the partitions this replica owns now, or nil while they are being reassigned.
    package init(peers: ReplicaPeers, partitionCount: Int, owned: @escaping @Sendable () -> Set<Int32>?) {
        self.peers = peers
        self.partitionCount = partitionCount
        self.owned = owned
    }

    /// Whether another replica forwarded `request`: it is answered from this replica's partitions alone.
    package static func isForwarded(_ request: Request) -> Bool {
        request.headers[.letheForwardedBy] != nil
    }

    /// nil when this replica owns `partition` (the route answers it); otherwise the owner's answer to `request`.
    /// `body` is the request's body when the route already read it.
    package func forwardUnlessOwned(
        _ request: Request, context: LetheRequestContext, partition: Int32, body: ByteBuffer? = nil
    ) async throws -> Response? {
        guard let owner = try owner(of: partition, request: request) else { return nil }
        return try await peers.forwarder.forward(request, to: owner.url, context: context, body: body)
    }

    /// nil when this replica owns `partition`; otherwise the owner's answer to `request` sent with `body`, for the
    /// route to read (one of several partitions a request touches).
    package func ask(
        _ request: Request, context: LetheRequestContext, partition: Int32, body: ByteBuffer
    ) async throws -> ReplicaForwarder.Answer? {
        guard let owner = try owner(of: partition, request: request) else { return nil }
        return try await peers.forwarder.gather(
            request, from: [owner.replica: owner.url], context: context, body: body,
            headers: [("content-type", "application/json")]
        ).first
    }

    /// The replica that owns `partition`, or nil when it is this one.
    private func owner(of partition: Int32, request: Request) throws -> ReplicaActivated? {
        let mine = try ownedNow()
        if mine.contains(partition) { return nil }
        guard !Self.isForwarded(request) else {
            throw Self.unavailable("partition \(partition) is no longer this replica's; ask again")
        }
        guard case .replica(let owner) = peers.directory.owner(of: partition) else {
            throw Self.unavailable("the replica that owns partition \(partition) is not announced yet")
        }
        return owner
    }

    /// The answers of the other replicas that own partitions to the question `request` asks (or `uri`, forwarded
    /// with `body` and `headers`), for the route to merge with its own: none when this replica owns every partition or
    /// the request was forwarded to it. 503 when a partition has no known owner, or an owner does not answer.
    package func gather(
        _ request: Request, context: LetheRequestContext, uri: String? = nil, body: ByteBuffer? = nil,
        headers: [(String, String)] = []
    ) async throws -> [ReplicaForwarder.Answer] {
        guard !Self.isForwarded(request) else { return [] }
        let mine = try ownedNow()
        var others: [String: String] = [:]
        for partition in Int32(0)..<Int32(partitionCount) where !mine.contains(partition) {
            switch peers.directory.owner(of: partition) {
            case .replica(let owner): others[owner.replica] = owner.url
            case .thisReplica, .unknown:
                // Announced as this one's but not owned any more, or never announced: someone else owns it now.
                throw Self.unavailable("the replica that owns partition \(partition) is not announced yet")
            }
        }
        guard !others.isEmpty else { return [] }
        return try await peers.forwarder.gather(
            request, from: others, context: context, uri: uri, body: body, headers: headers)
    }

    /// The partitions this replica owns, or 503 while they are being reassigned.
    private func ownedNow() throws -> Set<Int32> {
        guard let mine = owned() else { throw Self.unavailable("partitions are being reassigned among the replicas") }
        return mine
    }

    package static func unavailable(_ why: String) -> HTTPError {
        HTTPError(.serviceUnavailable, headers: [.retryAfter: "1"], message: why)
    }
}

extension ReplicaForwarder.Answer {
    /// The body of a 2xx answer; a replica's error becomes a 503 (it is one of several parts, which may be whole
    /// again when asked again) or 502 naming the replica and what it said.
    package func successBody() throws -> ByteBuffer {
        guard (200..<300).contains(status) else {
            throw HTTPError(
                HTTPResponse.Status(code: status == 503 ? 503 : 502),
                message: "replica \(replica) answered \(status): \(String(buffer: body).prefix(300))")
        }
        return body
    }

    /// The answer decoded as `T` (a 2xx, see ``successBody()``).
    package func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let body = try successBody()
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: Data(buffer: body))
        } catch {
            throw HTTPError(.badGateway, message: "replica \(replica) answered what could not be read: \(error)")
        }
    }
}
