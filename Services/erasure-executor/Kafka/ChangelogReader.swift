import Contracts
import Logging
import Messaging
import Metrics
import Synchronization

/// Reads erasure-executor's changelog (`lethe.erasure.state.v1`, ErasureLedger+Changelog) back into the ledger: at
/// start, every partition (the state reader, before the state topics), and at each assignment, the partitions intake's
/// group gave this replica (ErasureIntake), so whichever replica owns a partition holds its erasures.
struct ChangelogReader: Sendable {
    let ledger: ErasureLedger
    let bootstrapServers: String
    let producer: KafkaProducer
    let gate: RestoreGate
    let logger: Logger

    /// Reads `partitions` of the changelog back into the ledger, from where the last read-back of this file ended (a
    /// new file: from the beginning) to markers it writes now, retrying (with the reason in the readiness check) until
    /// it could; records where it ended, and logs what it restored, and an error for any record the ledger refused.
    /// `done` is the log line's message once read back.
    func restore(_ partitions: [TopicPartition], done: Logger.Message = "changelog read back") async throws {
        let started = ContinuousClock.now
        let (ledger, logger) = (self.ledger, self.logger)
        let tally = Mutex(ErasureLedger.ChangelogRestored())
        let transient = RetryPolicy.kafka.retrying(RetryPolicy.storage.isTransient)
        let read = try await retryUntilDone("reading the changelog back", logger: logger, policy: transient, onRetry: {
            self.gate.report(problem: "cannot read its changelog back: \($0)")
        }) { [bootstrapServers, producer] in
            tally.withLock { $0 = ErasureLedger.ChangelogRestored() }
            let positions = try await ledger.changelogPositions()
            let start = Dictionary(uniqueKeysWithValues: partitions.compactMap { partition in
                positions[partition.partition].map { (partition, $0) }
            })
            let read = try await RestoreMarker.readToEnd(
                partitions, from: start, bootstrapServers: bootstrapServers, producer: producer,
                clientId: "erasure-executor-changelog", logger: logger
            ) { messages in
                var unreadable = 0
                let records = messages.compactMap { message -> ErasureLedger.ChangelogRecord? in
                    do {
                        if message.stringHeaders["ce_type"] == ParticipantRetired.eventType {
                            return .retired(try message.decodeEvent(ParticipantRetired.self))
                        }
                        return .erasure(try message.decodeEvent(ErasureState.self))
                    } catch {
                        unreadable += 1
                        return nil
                    }
                }
                let restored = try await ledger.restore(records)
                tally.withLock { [unreadable] in
                    $0.erasures += restored.erasures
                    $0.retirements += restored.retirements
                    $0.refused += restored.refused + unreadable
                }
            }
            try await ledger.recordChangelogPositions(
                Dictionary(uniqueKeysWithValues: read.after.map { ($0.key.partition, $0.value) }))
            return read
        }
        let restored = tally.withLock { $0 }
        // A partition's previous owner may not have applied a retirement yet: its erasures still wait for the
        // participant here.
        let completedByRetirements = try await retryUntilDone(
            "waiving retired participants", logger: logger, policy: .storage
        ) { try await ledger.waiveRetiredInRestored() }
        if completedByRetirements > 0 {
            logger.notice("restored erasures completed: their remaining participants were retired", metadata: [
                "count": "\(completedByRetirements)",
            ])
        }
        Counter(label: "lethe_erasure_changelog_restored_total").increment(by: restored.erasures)
        Counter(label: "lethe_erasure_changelog_refused_total").increment(by: restored.refused)
        gate.report(problem: nil)
        logger.info(done, metadata: [
            "partitions": "\(partitions.map(\.partition))", "count": "\(read.handed)", "erasure.restored": "\(restored.erasures)",
            "erasure.retirements_restored": "\(restored.retirements)", "erasure.restore_time": "\(ContinuousClock.now - started)",
        ])
        if restored.refused > 0 {
            logger.error("changelog records refused: unreadable, or contradicting the ledger (left out)", metadata: [
                "count": "\(restored.refused)",
            ])
        }
    }
}
