import ServiceKit
import Testing

@Suite("The client address behind trusted proxies (per-IP limits)")
struct ClientAddressTests {
    @Test("CIDR blocks: IPv4 and IPv6 prefixes, one address, an IPv4-mapped IPv6 peer; malformed blocks refused")
    func cidrBlocks() {
        #expect(CIDRBlock("10.0.0.0/8") != nil && CIDRBlock("::1") != nil && CIDRBlock("fd00::/8") != nil)
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "proxy", "", "10.0.0.0/x"] {
            #expect(CIDRBlock(bad) == nil, "\(bad)")
        }
        let resolver = ClientAddressResolver(trustedProxies: ["10.0.0.0/8", "fd00::/8", "192.0.2.1"].compactMap(CIDRBlock.init))
        // Each peer below is a trusted proxy (the forwarded address is believed) or not (it is the client).
        #expect(resolver.clientAddress(peer: "10.1.2.3", forwardedFor: ["198.51.100.9"]) == "198.51.100.9")
        #expect(resolver.clientAddress(peer: "::ffff:10.1.2.3", forwardedFor: ["198.51.100.9"]) == "198.51.100.9")
        #expect(resolver.clientAddress(peer: "fd12::7", forwardedFor: ["2001:db8::1"]) == "2001:db8::1")
        #expect(resolver.clientAddress(peer: "192.0.2.1", forwardedFor: ["198.51.100.9"]) == "198.51.100.9")
        #expect(resolver.clientAddress(peer: "192.0.2.2", forwardedFor: ["198.51.100.9"]) == "192.0.2.2")
        #expect(resolver.clientAddress(peer: "11.0.0.1", forwardedFor: ["198.51.100.9"]) == "11.0.0.1")
    }

    @Test("""
        X-Forwarded-For is read from the right: the first entry that is not a trusted proxy is the client, whatever the \
        client wrote to its left; garbage or no header leaves the proxy itself; no peer, no address
        """)
    func forwardedFor() {
        let resolver = ClientAddressResolver(trustedProxies: [CIDRBlock("10.0.0.0/8")!])
        #expect(resolver.clientAddress(peer: "10.0.0.5", forwardedFor: ["6.6.6.6, 198.51.100.9"]) == "198.51.100.9")
        #expect(resolver.clientAddress(peer: "10.0.0.5", forwardedFor: ["6.6.6.6", "198.51.100.9, 10.0.0.4"])
            == "198.51.100.9")
        #expect(resolver.clientAddress(peer: "10.0.0.5", forwardedFor: ["10.0.0.3, 10.0.0.4"]) == "10.0.0.3")
        #expect(resolver.clientAddress(peer: "10.0.0.5", forwardedFor: ["198.51.100.9, not-an-address"]) == "10.0.0.5")
        #expect(resolver.clientAddress(peer: "10.0.0.5", forwardedFor: []) == "10.0.0.5")
        #expect(resolver.clientAddress(peer: nil, forwardedFor: ["198.51.100.9"]) == nil)
        let trustingNobody = ClientAddressResolver(trustedProxies: [])
        #expect(trustingNobody.clientAddress(peer: "10.0.0.5", forwardedFor: ["198.51.100.9"]) == "10.0.0.5")
    }
}
