/// The partition a key lands on under Kafka's default partitioner — the Java client's, and librdkafka's
/// `murmur2_random`, which every Lethe producer sets (``KafkaProducer``) and the participant contract names: murmur2
/// of the key's bytes, made positive, modulo the partition count. Computing it lets a service choose keys that land
/// where it wants (erasure ids on their subject's partition) and check where a record should have landed.
package enum KeyPartitioner {
    /// The partition of `key` among `count` partitions.
    package static func partition(of key: some Collection<UInt8>, count: Int) -> Int32 {
        precondition(count > 0, "a topic has at least one partition")
        return Int32((murmur2(key) & 0x7fff_ffff) % UInt32(count))
    }

    /// The partition of `key`'s UTF-8 bytes among `count` partitions.
    package static func partition(of key: String, count: Int) -> Int32 {
        partition(of: key.utf8, count: count)
    }

    /// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, seed 0x9747b28c), as an unsigned 32-bit value.
    package static func murmur2(_ key: some Collection<UInt8>) -> UInt32 {
        let bytes = Array(key)
        let m: UInt32 = 0x5bd1_e995
        var h: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: bytes.count)
        let whole = bytes.count / 4
        for block in 0..<whole {
            let i = block * 4
            var k = UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
            k = k &* m
            k ^= k >> 24
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = whole * 4
        switch bytes.count % 4 {
        case 3:
            h ^= UInt32(bytes[tail + 2]) << 16
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 2:
            h ^= UInt32(bytes[tail + 1]) << 8
            h ^= UInt32(bytes[tail])
            h = h &* m
        case 1:
            h ^= UInt32(bytes[tail])
            h = h &* m
        default:
            break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return h
    }
}
