import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The request context of every Lethe service: Hummingbird's basic one plus the peer's socket address, which per-IP
/// limits need (``ClientAddressResolver``). The peer is nil where there is no socket (in-process router tests).
package struct LetheRequestContext: RequestContext, RemoteAddressRequestContext {
    package var coreContext: CoreRequestContextStorage
    package let remoteAddress: SocketAddress?

    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// Who a request comes from, for per-IP limits: the socket's peer, unless that peer is a trusted proxy
/// (`trustedProxies`, CIDR blocks), in which case `X-Forwarded-For` is read from the right and the first address that
/// is not a trusted proxy is the client. An address a client put in the header itself is never believed: only what
/// the trusted proxies appended is (the rightmost entries).
package struct ClientAddressResolver: Sendable {
    package let trustedProxies: [CIDRBlock]

    package init(trustedProxies: [CIDRBlock]) { self.trustedProxies = trustedProxies }

    /// The client's IP address as text, or nil when the request has no peer (no socket).
    package func clientAddress(peer: String?, forwardedFor: [String]) -> String? {
        guard let peer else { return nil }
        guard isTrusted(peer) else { return peer }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        for hop in hops.reversed() {
            guard IPAddressBytes(hop) != nil else { return peer }  // garbage: fall back to the proxy itself
            if !isTrusted(hop) { return hop }
        }
        return hops.first ?? peer
    }

    package func clientAddress(of request: Request, context: LetheRequestContext) -> String? {
        clientAddress(
            peer: context.remoteAddress?.ipAddress,
            forwardedFor: request.headers[values: HTTPField.Name("X-Forwarded-For")!])
    }

    private func isTrusted(_ address: String) -> Bool {
        guard let bytes = IPAddressBytes(address) else { return false }
        return trustedProxies.contains { $0.contains(bytes) }
    }
}

/// An IPv4 or IPv6 address block (`10.0.0.0/8`, `fd00::/8`, or one address).
package struct CIDRBlock: Sendable, Equatable, CustomStringConvertible {
    let network: IPAddressBytes
    let prefixLength: Int

    /// Nil for anything but `address[/prefix]` with a prefix in range.
    package init?(_ text: String) {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", maxSplits: 1)
        guard let first = parts.first, let network = IPAddressBytes(String(first)) else { return nil }
        let bits = network.bytes.count * 8
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...bits).contains(length) else { return nil }
            prefixLength = length
        } else {
            prefixLength = bits
        }
        self.network = network
    }

    package var description: String { "\(network)/\(prefixLength)" }

    /// Whether `address` (IPv4 or IPv6 text) is in this block; false for anything that is not an address.
    package func contains(address: String) -> Bool {
        IPAddressBytes(address).map(contains) ?? false
    }

    func contains(_ address: IPAddressBytes) -> Bool {
        guard address.bytes.count == network.bytes.count else { return false }
        var remaining = prefixLength
        for (a, b) in zip(address.bytes, network.bytes) where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xFF : ~(0xFF >> UInt8(remaining))
            if a & mask != b & mask { return false }
            remaining -= 8
        }
        return true
    }
}

/// An address's bytes (4 for IPv4, 16 for IPv6), parsed by the C library; an IPv4-mapped IPv6 address counts as IPv4.
struct IPAddressBytes: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]

    init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let raw = withUnsafeBytes(of: &v6) { Array($0) }
        bytes = raw[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] ? Array(raw[12...]) : raw
    }

    var description: String {
        bytes.count == 4 ? bytes.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
                .joined(separator: ":")
    }
}
