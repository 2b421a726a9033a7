import Logging
import ServiceLifecycle
import ServiceRuntime

/// Periodically dispatches pending erasures, re-sends missing acks, flags overdue erasures, and refreshes the gauges.
final class ErasureSweeper: Service, Sendable {
    private let ledger: ErasureLedger
    private let relay: ErasureNotifier
    private let interval: Duration
    private let metrics: ErasureMetrics
    private let gate: RestoreGate
    private let ownership: PartitionOwnership
    private let logger: Logger

    init(
        ledger: ErasureLedger, relay: ErasureNotifier, interval: Duration, metrics: ErasureMetrics, gate: RestoreGate,
        ownership: PartitionOwnership, logger: Logger
    ) {
        self.ledger = ledger
        self.relay = relay
        self.interval = interval
        self.metrics = metrics
        self.gate = gate
        self.ownership = ownership
        self.logger = logger
    }

    func run() async throws {
        // Nothing is dispatched or re-sent before every declared participant is known.
        guard await gate.waitUntilOpen() else { return }
        var gaugesRefreshed: ContinuousClock.Instant?
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            // While partitions move between replicas, their erasures are nobody's to re-send.
            guard ownership.partitions != nil else {
                try? await Task.sleep(for: interval)
                continue
            }
            do {
                let result = try await ledger.sweep()
                if result.dispatched + result.resent > 0 { relay.notify() }
                metrics.resent.increment(by: result.resent)
                if result.newlyOverdue > 0 {
                    logger.warning("erasures past their deadline", metadata: ["count": "\(result.newlyOverdue)"])
                }
                // The gauges at most once a second, however short the sweep interval: a scrape interval is seconds.
                let due = gaugesRefreshed.map { ContinuousClock.now - $0 >= .seconds(1) } ?? true
                if result.newlyOverdue > 0 || due {
                    metrics.update(try await ledger.counts())
                    gaugesRefreshed = .now
                }
            } catch {
                logger.error("sweep failed", metadata: ["error": "\(type(of: error))"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}

/// Something to poke after a transaction enqueued outbox rows (the `OutboxRelay`; a no-op in unit tests).
protocol ErasureNotifier: Sendable {
    func notify()
}
