import Synchronization

/// Token buckets per key (a client id, say): `perMinute` requests a minute on average, up to `burst` at once. In
/// memory and per process: at N replicas behind a load balancer each allows its share, so the limit a key meets is
/// about N times this — a brake on floods and guessing, not a quota.
///
/// The number of keys is bounded: when a new key finds `maxKeys` buckets, the buckets that have refilled (idle keys,
/// which would start full anyway) are dropped first, and if every key is busy all are dropped — a flood of distinct
/// keys then resets the limits rather than growing memory.
package final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private let perSecond: Double
    private let burst: Double
    private let maxKeys: Int
    private let buckets = Mutex<[String: Bucket]>([:])

    package init(perMinute: Int, burst: Int, maxKeys: Int = 100_000) {
        precondition(perMinute > 0 && burst > 0 && maxKeys > 0)
        self.perSecond = Double(perMinute) / 60
        self.burst = Double(burst)
        self.maxKeys = maxKeys
    }

    /// Takes one request for `key`: nil when allowed, else the whole seconds until one will be (`Retry-After`).
    package func take(_ key: String, now: ContinuousClock.Instant = .now) -> Int? {
        let (perSecond, burst, maxKeys) = (self.perSecond, self.burst, self.maxKeys)
        return buckets.withLock { buckets -> Int? in
            var bucket: Bucket
            if let known = buckets[key] {
                bucket = known
                let elapsed = now - bucket.updated
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                bucket.tokens = min(burst, bucket.tokens + seconds * perSecond)
            } else {
                if buckets.count >= maxKeys {
                    buckets = buckets.filter { entry in
                        let idle = now - entry.value.updated
                        return entry.value.tokens + Double(idle.components.seconds) * perSecond < burst
                    }
                    if buckets.count >= maxKeys { buckets.removeAll() }
                }
                bucket = Bucket(tokens: burst, updated: now)
            }
            bucket.updated = now
            defer { buckets[key] = bucket }
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                return nil
            }
            return max(1, Int(((1 - bucket.tokens) / perSecond).rounded(.up)))
        }
    }

    /// How many keys have a bucket (for tests and metrics).
    package var keyCount: Int { buckets.withLock { $0.count } }
}
