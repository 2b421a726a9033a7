#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Random (version 4) UUIDs as lowercase strings, for ids made once per record on hot paths (CloudEvents `ce_id`,
/// row ids). Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for each one, which made it a
/// tenth of profile-store's ingest CPU; this reads the same device, kept open, 4 KiB at a time.
package enum RandomIdentifier {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096
    }

    private static let pool = Mutex(Pool())

    /// A new random UUID, e.g. `0f8fad5b-d9cb-469f-a165-70867728950e`: 122 random bits, the version and variant bits
    /// set as RFC 9562 §5.4 says, the same text `UUID().uuidString.lowercased()` gives.
    package static func uuidString() -> String {
        var uuid = (0..<16).map { _ in UInt8(0) }
        pool.withLock { pool in
            if pool.next + 16 > pool.bytes.count {
                pool.bytes.withUnsafeMutableBytes { fill($0) }
                pool.next = 0
            }
            for index in 0..<16 { uuid[index] = pool.bytes[pool.next + index] }
            // The bytes handed out are overwritten, so a later reader of this memory learns nothing about old ids.
            for index in 0..<16 { pool.bytes[pool.next + index] = 0 }
            pool.next += 16
        }
        uuid[6] = (uuid[6] & 0x0f) | 0x40
        uuid[8] = (uuid[8] & 0x3f) | 0x80
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 36) { text in
            var out = 0
            for index in 0..<16 {
                if index == 4 || index == 6 || index == 8 || index == 10 {
                    text[out] = UInt8(ascii: "-")
                    out += 1
                }
                text[out] = hex[Int(uuid[index] >> 4)]
                text[out + 1] = hex[Int(uuid[index] & 0x0f)]
                out += 2
            }
            return out
        }
    }

    /// `/dev/urandom`, opened once and kept open (-1 if it cannot be opened).
    private static let urandom: Int32 = open("/dev/urandom", O_RDONLY | O_CLOEXEC)

    private static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var filled = 0
        while urandom >= 0, filled < buffer.count {
            let count = read(urandom, buffer.baseAddress! + filled, buffer.count - filled)
            if count > 0 {
                filled += count
            } else if count < 0, errno != EINTR {
                break
            }
        }
        // Without the device (a sandbox that hides /dev): the standard library's generator, which is the same kernel
        // source through getrandom, 8 bytes per call.
        var generator = SystemRandomNumberGenerator()
        while filled < buffer.count {
            buffer[filled] = UInt8.random(in: .min ... .max, using: &generator)
            filled += 1
        }
    }
}
