/// SplitMix64: small, fast and fully determined by its seed, so two sandboxes started with the same `SANDBOX_SEED`
/// hand out the same ids, tokens and codes and fire the same random faults in the same order.
struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `count` lowercase hex characters.
    mutating func hex(_ count: Int) -> String {
        var result = ""
        while result.count < count {
            let word = String(next(), radix: 16)
            result += String(repeating: "0", count: 16 - word.count) + word
        }
        return String(result.prefix(count))
    }

    /// A random UUID-shaped string, for cloud ids.
    mutating func uuid() -> String {
        let h = hex(32)
        let parts = [h.prefix(8), h.dropFirst(8).prefix(4), h.dropFirst(12).prefix(4), h.dropFirst(16).prefix(4),
                     h.dropFirst(20)]
        return parts.joined(separator: "-")
    }
}
