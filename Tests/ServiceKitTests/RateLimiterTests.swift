import ServiceKit
import Testing

@Suite("RateLimiter: token buckets per key")
struct RateLimiterTests {
    @Test("a burst passes, the next waits the time one request takes to refill; keys are apart")
    func burstThenWait() {
        let limiter = RateLimiter(perMinute: 60, burst: 3)
        let start = ContinuousClock.now
        #expect((0..<3).map { _ in limiter.take("a", now: start) } == [nil, nil, nil])
        #expect(limiter.take("a", now: start) == 1)
        #expect(limiter.take("b", now: start) == nil)
        // One a second refills: half a second is not enough, a second is, and only for one request.
        #expect(limiter.take("a", now: start + .milliseconds(500)) == 1)
        #expect(limiter.take("a", now: start + .seconds(1)) == nil)
        #expect(limiter.take("a", now: start + .seconds(1)) != nil)
        // Idle for long, the bucket holds no more than the burst.
        let later = start + .seconds(3600)
        #expect((0..<4).map { _ in limiter.take("a", now: later) } == [nil, nil, nil, 1])
    }

    @Test("the number of keys is bounded: idle keys go first, then all")
    func boundedKeys() {
        let limiter = RateLimiter(perMinute: 60, burst: 2, maxKeys: 3)
        let start = ContinuousClock.now
        for key in ["a", "b", "c"] { _ = limiter.take(key, now: start) }
        #expect(limiter.keyCount == 3)
        // Ten seconds on, a, b and c have refilled: a new key drops them.
        #expect(limiter.take("d", now: start + .seconds(10)) == nil)
        #expect(limiter.keyCount == 1)
        for key in ["e", "f"] { _ = limiter.take(key, now: start + .seconds(10)) }
        // All busy: a fourth key resets the table rather than growing it.
        #expect(limiter.take("g", now: start + .seconds(10)) == nil)
        #expect(limiter.keyCount == 1)
    }
}
