extension Sequence<UInt8> {
    /// Lower-case hex, the one encoder every service uses for digests, key ids and subject hashes. By table rather
    /// than `String(format: "%02x")` per byte, which costs more than the hash it prints: the gateway's sign-in and the
    /// executor's every erasure spent more CPU on formatting than on SHA-256.
    package var hex: String {
        var digits: [UInt8] = []
        digits.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            digits.append(lowerHexDigits[Int(byte >> 4)])
            digits.append(lowerHexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: digits, as: UTF8.self)
    }
}

private let lowerHexDigits = Array("0123456789abcdef".utf8)
