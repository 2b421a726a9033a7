import AsyncHTTPClient
import Contracts
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// The operator APIs of the other services, called with the operator's token: the console owns no data, it asks.
struct ServiceAPIs: Sendable {
    let client: HTTPClient
    let adminToken: String
    let gateway: URL
    let executor: URL
    let reporters: [URL]
    let logger: Logger
    static let timeout: TimeAmount = .seconds(5)

    /// Why a call failed, in words an operator can act on (no body: it could hold anything).
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    // MARK: Reading

    func tenants() async -> ConsoleSnapshot.Part<[TenantSummary]> {
        struct Page: Decodable {
            var tenants: [TenantSummary]
            var nextCursor: String?
        }
        return await part {
            var tenants: [TenantSummary] = []
            var cursor: String?
            repeat {
                let query = "limit=500" + (cursor.map { "&cursor=\($0)" } ?? "")
                let page = try await get(Page.self, gateway, "/v1/tenants?" + query)
                tenants += page.tenants
                cursor = page.nextCursor
            } while cursor != nil
            return tenants
        }
    }

    func streams() async -> ConsoleSnapshot.Part<[StreamOverview]> {
        await part { try await get(StreamOverviewList.self, gateway, "/v1/ssf/streams").streams }
    }

    func counts() async -> ConsoleSnapshot.Part<ErasureCounts> {
        await part { try await get(ErasureCounts.self, executor, "/v1/erasures/counts") }
    }

    /// Every erasure of `status`, oldest first (at most `limit`).
    func erasures(status: String, limit: Int = 500) async throws -> [ErasureSummary] {
        struct Page: Decodable {
            var erasures: [ErasureSummary]
            var nextCursor: String?
        }
        var erasures: [ErasureSummary] = []
        var cursor: String?
        repeat {
            let query = "status=\(status)&limit=\(min(500, limit))" + (cursor.map { "&cursor=\($0)" } ?? "")
            let page = try await get(Page.self, executor, "/v1/erasures?" + query)
            erasures += page.erasures
            cursor = page.nextCursor
        } while cursor != nil && erasures.count < limit
        return Array(erasures.prefix(limit))
    }

    func openErasures() async -> ConsoleSnapshot.Part<[ErasureSummary]> {
        await part {
            var open: [ErasureSummary] = []
            for status in ["needs-attention", "dispatched", "pending"] { open += try await erasures(status: status) }
            return open.sorted { $0.createdAt < $1.createdAt }
        }
    }

    /// One erasure, as the executor shows it.
    func erasure(_ id: String) async -> ConsoleSnapshot.Part<ErasureSummary> {
        await part { try await get(ErasureSummary.self, executor, "/v1/erasures/\(Self.pathSegment(id))") }
    }

    func participants() async -> ConsoleSnapshot.Part<ParticipantsSummary> {
        await part { try await get(ParticipantsSummary.self, executor, "/v1/participants") }
    }

    func audit() async -> ConsoleSnapshot.Part<AuditSummary> {
        await part { try await get(AuditSummary.self, executor, "/v1/audit/verify") }
    }

    /// Every reporter replica's apps, merged, and what each replica answered.
    func reporting() async -> (ConsoleSnapshot.Part<[AppReporting]>, [ReporterAnswer]) {
        struct List: Decodable { var apps: [AppReporting] }
        var answers: [ReporterAnswer] = []
        var lists: [[AppReporting]] = []
        for base in await ReporterAddresses.expand(reporters) {
            do {
                let apps = try await get(List.self, base, "/v1/apps").apps
                lists.append(apps)
                answers.append(ReporterAnswer(address: base.absoluteString, apps: apps.count, problem: nil))
            } catch {
                answers.append(ReporterAnswer(address: base.absoluteString, apps: nil, problem: "\(error)"))
            }
        }
        if lists.isEmpty {
            return (
                .unavailable("no reporter answered: " + answers.compactMap(\.problem).joined(separator: "; ")), answers
            )
        }
        return (.loaded(AppReporting.merged(lists)), answers)
    }

    // MARK: Acting

    /// `POST /v1/erasures/{id}/retry` on the executor; the reason it was refused, or nil.
    func retry(erasure id: String) async -> String? {
        await post(executor, "/v1/erasures/\(Self.pathSegment(id))/retry", body: nil)
    }

    /// `POST /v1/erasures/{id}/waive` on the executor; the reason it was refused, or nil.
    func waive(erasure id: String, participant: String, reason: String) async -> String? {
        let body = (try? JSONEncoder().encode(["participant": participant, "reason": reason])) ?? Data()
        return await post(executor, "/v1/erasures/\(Self.pathSegment(id))/waive", body: body)
    }

    /// `POST /v1/participants/{name}/retire` on the executor; the reason it was refused, or nil.
    func retire(participant: String, reason: String) async -> String? {
        let body = (try? JSONEncoder().encode(["reason": reason])) ?? Data()
        return await post(executor, "/v1/participants/\(Self.pathSegment(participant))/retire", body: body)
    }

    /// The audit export (JSON lines), streamed from the executor.
    func auditExport() async throws -> HTTPClientResponse {
        let response = try await client.execute(request(executor, "/v1/audit/export"), timeout: .seconds(60))
        guard response.status == .ok else {
            throw Failure(description: "the executor answered \(response.status.code)")
        }
        return response
    }

    // MARK: Plumbing

    private func part<Value>(_ body: () async throws -> Value) async -> ConsoleSnapshot.Part<Value> {
        do {
            return .loaded(try await body())
        } catch {
            return .unavailable("\(error)")
        }
    }

    private func request(_ base: URL, _ path: String, method: HTTPMethod = .GET) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: base.absoluteString.trimmingSuffix("/") + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
        request.headers.add(name: "Accept", value: "application/json")
        return request
    }

    private func get<T: Decodable>(_ kind: T.Type, _ base: URL, _ path: String) async throws -> T {
        let where_ = "\(base.host ?? "?"):\(base.port.map(String.init) ?? "") \(path.split(separator: "?")[0])"
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request(base, path), timeout: Self.timeout)
        } catch {
            throw Failure(description: "\(where_): no answer (\(type(of: error)))")
        }
        guard response.status == .ok else {
            throw Failure(description: "\(where_) answered \(response.status.code)")
        }
        let body = try await response.body.collect(upTo: 32 << 20)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: body))
        } catch {
            throw Failure(description: "\(where_): an answer the console cannot read")
        }
    }

    private func post(_ base: URL, _ path: String, body: Data?) async -> String? {
        var request = request(base, path, method: .POST)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        do {
            let response = try await client.execute(request, timeout: Self.timeout)
            if (200..<300).contains(Int(response.status.code)) { return nil }
            // The services' error shape carries a message meant for people; show it.
            struct Problem: Decodable { var message: String? }
            let text = try? await response.body.collect(upTo: 64 * 1024)
            let message = text.flatMap { try? JSONDecoder().decode(Problem.self, from: Data(buffer: $0)).message }
            return "\(response.status.code)" + (message.map { ": \($0)" } ?? "")
        } catch {
            return "no answer from the executor (\(type(of: error)))"
        }
    }

    /// A path segment with everything but unreserved characters percent-encoded.
    static func pathSegment(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

/// Reporter replicas behind one name: a scaled compose service is one DNS name with an address per replica, and each
/// replica reports only for its partitions, so the console asks every address.
enum ReporterAddresses {
    static func expand(_ urls: [URL]) async -> [URL] {
        var expanded: [URL] = []
        for url in urls {
            guard let host = url.host, var components = URLComponents(url: url, resolvingAgainstBaseURL: false) else {
                continue
            }
            let addresses = resolve(host)
            if addresses.count <= 1 {
                expanded.append(url)
                continue
            }
            for address in addresses {
                components.host = address.contains(":") ? "[\(address)]" : address
                if let replica = components.url { expanded.append(replica) }
            }
        }
        return expanded
    }

    /// Every address `host` resolves to (one for a literal address), in the resolver's order without repeats.
    static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        // IPv4 only: `localhost` would otherwise be two replicas (127.0.0.1 and ::1); compose networks are IPv4.
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [host] }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(
                current.pointee.ai_addr, current.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0,
                NI_NUMERICHOST) == 0
            {
                let address = String(cString: buffer)
                if !addresses.contains(address) { addresses.append(address) }
            }
            entry = current.pointee.ai_next
        }
        return addresses.isEmpty ? [host] : addresses
    }
}
