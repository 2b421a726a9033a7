import Contracts
import Foundation
import Logging
import Messaging
import Metrics
import ServiceLifecycle

/// What a participant reports for one erasure: the outcome and an optional PII-free detail.
package struct ErasureResult: Sendable, Hashable {
    package var outcome: ErasureOutcome
    package var detail: String?

    package init(outcome: ErasureOutcome, detail: String? = nil) {
        self.outcome = outcome
        self.detail = detail
    }
}

/// The service-specific part of taking part in erasure: applying a command to the service's own data.
///
/// Idempotency contract: ``apply(_:)`` must record its result under the command's `erasureId` in the same
/// transaction as its effect, and ``recordedResult(of:)`` must return that record. The participant asks
/// ``recordedResult(of:)`` first, so a repeated command (the executor re-sends until it has every ack, and delivery
/// is at-least-once) is acknowledged again with the recorded outcome and never applied a second time.
package protocol ErasureHandler: Sendable {
    /// The result recorded when `erasureId` was applied, or nil when it never was.
    func recordedResult(of erasureId: String) async throws -> ErasureResult?
    /// Applies the command to this service's data and records the result atomically with the effect. Throwing
    /// means nothing was applied; the participant acknowledges `failed` and the executor re-sends later.
    func apply(_ command: EraseSubject) async throws -> ErasureResult
    /// Resolves a batch of commands (whatever arrived together, in topic order): one result per command, in the same
    /// order — the recorded result when the command was applied before, else the result of applying it now.
    ///
    /// Implement it when the service can apply many commands in one transaction (one fsync instead of one per
    /// command): look up each record inside that transaction, because a batch can hold the same `erasureId` twice
    /// (a re-send next to the original), and the second must see the first's record. Throwing means nothing of the
    /// batch was applied (the transaction rolled back); the participant then resolves the commands one at a time,
    /// so one bad command is acknowledged `failed` alone. The default resolves them one at a time through
    /// ``recordedResult(of:)`` and ``apply(_:)``.
    func applyBatch(_ commands: [EraseSubject]) async throws -> [ErasureResult]
}

extension ErasureHandler {
    /// One command at a time, as before batches: a command whose handler throws becomes `failed` (see
    /// ``ErasureResult/failed(by:)``) and the others still go through. Never throws.
    package func applyBatch(_ commands: [EraseSubject]) async throws -> [ErasureResult] {
        var results: [ErasureResult] = []
        results.reserveCapacity(commands.count)
        for command in commands {
            do {
                if let recorded = try await recordedResult(of: command.erasureId) {
                    results.append(recorded)
                } else {
                    results.append(try await apply(command))
                }
            } catch {
                results.append(.failed(by: error))
            }
        }
        return results
    }
}

extension ErasureResult {
    /// The `failed` result of a handler error: its type as the detail, never its message (which might hold data).
    package static func failed(by error: any Error) -> ErasureResult {
        ErasureResult(outcome: .failed, detail: "participant error: \(type(of: error))")
    }
}

/// Where and as whom a participant works.
package struct ErasureParticipantConfig: Sendable {
    /// The participant's stable name, used in the declaration and in every ack (e.g. `profile-store`).
    package var participant: String
    /// The personal-data fields it holds, for the audit record (e.g. `name`, `email`).
    package var holds: [String]
    /// Its own consumer group on the commands topic: every participant sees every command.
    package var groupId: String
    /// `ce_source` of what it publishes, e.g. `lethe/profile-store`.
    package var source: String
    package var commandsTopic: String
    package var acksTopic: String
    package var participantsTopic: String
    /// How long the group waits for a silent member.
    package var sessionTimeout: Duration
    /// How long a fetch of commands may wait at the broker (``KafkaConsumerConfig/fetchMaxWait``).
    package var fetchMaxWait: Duration

    package init(
        participant: String, holds: [String], groupId: String? = nil, source: String? = nil,
        commandsTopic: String = Topics.erasureCommands.name, acksTopic: String = Topics.erasureAcks.name,
        participantsTopic: String = Topics.erasureParticipants.name, sessionTimeout: Duration = .seconds(10),
        fetchMaxWait: Duration = .milliseconds(500)
    ) {
        self.participant = participant
        self.holds = holds
        self.groupId = groupId ?? "lethe.erasure.\(participant)"
        self.source = source ?? "lethe/\(participant)"
        self.commandsTopic = commandsTopic
        self.acksTopic = acksTopic
        self.participantsTopic = participantsTopic
        self.sessionTimeout = sessionTimeout
        self.fetchMaxWait = fetchMaxWait
    }
}

/// Everything a Swift service needs to take part in erasure. On start it declares itself on the participants topic
/// (`ParticipantDeclared`); then, in its own consumer group on the commands topic, it decodes each `EraseSubject`,
/// applies it through the ``ErasureHandler`` (or re-uses the recorded result), publishes `ErasureAcknowledged` and
/// waits for the broker's ack, and only then commits the command's offset. A crash anywhere re-delivers the command,
/// which the handler's record turns into a re-ack. A command that cannot be decoded goes to the DLQ and the
/// consumer moves on.
///
/// List it after the `KafkaProducer` it uses in the `ServiceGroup` (which shuts services down in reverse order), so
/// the producer outlives it. It runs its consumer itself. A service that consumes the commands in a group of its own
/// (profile-store, whose replicas own partitions of the commands and of their subjects' data alike) uses an
/// ``ErasureAcknowledger`` instead.
package final class ErasureParticipant: Service, Sendable {
    private let acknowledger: ErasureAcknowledger
    private let pipeline: ConsumerPipeline<EraseSubject>

    package init(
        config: ErasureParticipantConfig, handler: any ErasureHandler, producer: KafkaProducer,
        bootstrapServers: String, logger: Logger
    ) throws(KafkaError) {
        acknowledger = ErasureAcknowledger(config: config, handler: handler, producer: producer, logger: logger)
        let consumer = try KafkaConsumer(
            config: KafkaConsumerConfig(
                bootstrapServers: bootstrapServers,
                subscription: .group(id: config.groupId, topics: [config.commandsTopic]),
                clientId: "\(config.participant)-erasure", sessionTimeout: config.sessionTimeout,
                fetchMaxWait: config.fetchMaxWait),
            logger: logger)
        // Batches of up to 500 commands: one handler transaction, one send of their acks, one commit.
        self.pipeline = ConsumerPipeline(
            consumer: consumer, producer: producer, logger: logger, work: "acknowledging erasure commands",
            retry: .kafka, maxBatch: 500
        ) { message in try message.decodeEvent(EraseSubject.self) }
    }

    /// Declares, then processes commands until graceful shutdown.
    package func run() async throws {
        try await pipeline.run(waitingFor: {
            try await self.acknowledger.declare()
            return true
        }) { batch in
            try await self.acknowledger.handle(batch.map(\.item))
            return []
        }
    }
}

/// The part of ``ErasureParticipant`` that does not consume: declaring the participant, and resolving a batch of
/// commands through the ``ErasureHandler`` and acknowledging them. A service that reads the commands with its own
/// consumer calls ``declare()`` before its first command and ``handle(_:)`` for each batch, before it commits the
/// batch's offsets.
package struct ErasureAcknowledger: Sendable {
    private let config: ErasureParticipantConfig
    private let handler: any ErasureHandler
    private let producer: KafkaProducer
    private let logger: Logger

    package init(config: ErasureParticipantConfig, handler: any ErasureHandler, producer: KafkaProducer, logger: Logger) {
        self.config = config
        self.handler = handler
        self.producer = producer
        self.logger = logger
    }

    /// Publishes `ParticipantDeclared`, retrying until the broker has it: the executor must know to wait for us.
    package func declare() async throws {
        let declaration = ParticipantDeclared(participant: config.participant, holds: config.holds, declaredAt: Date())
        let message = try OutgoingMessage(
            event: declaration, topic: config.participantsTopic, key: config.participant, source: config.source)
        try await retryUntilDone("sending the participant declaration", logger: logger) {
            try await producer.send(message)
        }
        logger.info("declared erasure participant", metadata: ["participant": "\(config.participant)"])
    }

    /// A batch of commands (the pipeline takes whatever arrived while the previous batch was handled, up to 500):
    /// resolved through the handler's ``ErasureHandler/applyBatch(_:)`` (one transaction for the whole batch where
    /// the handler supports it), then the batch's acks go out in ONE producer send (one linger, one round of broker
    /// acknowledgements instead of one per command); the pipeline commits the offsets after the broker has every ack.
    /// Nothing is committed before the handler's transaction and the acks are durable, so a crash anywhere
    /// re-delivers the batch, which the handler's records turn into re-acks. A command that cannot be decoded went
    /// to the DLQ before.
    package func handle(_ commands: [EraseSubject]) async throws {
        let results = await resolve(commands)
        var acks: [OutgoingMessage] = []
        acks.reserveCapacity(commands.count)
        let now = Date()
        for (command, result) in zip(commands, results) {
            if result.outcome == .failed {
                logger.error("erasure failed", metadata: [
                    "erasure": "\(command.erasureId)", "detail": "\(result.detail ?? "")",
                ])
            }
            let ack = ErasureAcknowledged(
                erasureId: command.erasureId, participant: config.participant, outcome: result.outcome,
                detail: result.detail, at: now)
            acks.append(try OutgoingMessage(
                event: ack, topic: config.acksTopic, key: command.erasureId, source: config.source))
        }
        if !acks.isEmpty {
            let outgoing = acks
            try await retryUntilDone("sending the erasure acks", logger: logger) { try await producer.send(outgoing) }
        }
        for result in results {
            Counter(label: "lethe_erasures_total", dimensions: [
                ("participant", config.participant), ("outcome", result.outcome.rawValue),
            ]).increment()
        }
        logger.info("erasure commands acknowledged", metadata: ["count": "\(acks.count)"])
    }

    /// One result per command, in order: the handler's batch, or, when the batch fails as a whole (its transaction
    /// rolled back) or answers with the wrong number of results, one command at a time so a bad command fails alone.
    private func resolve(_ commands: [EraseSubject]) async -> [ErasureResult] {
        guard !commands.isEmpty else { return [] }
        do {
            let results = try await handler.applyBatch(commands)
            if results.count == commands.count { return results }
            logger.error("erasure handler answered a batch with the wrong number of results; one at a time", metadata: [
                "commands": "\(commands.count)", "results": "\(results.count)",
            ])
        } catch {
            logger.warning("erasure batch failed as a whole; applying its commands one at a time", metadata: [
                "count": "\(commands.count)", "error": "\(type(of: error))",
            ])
        }
        var results: [ErasureResult] = []
        results.reserveCapacity(commands.count)
        for command in commands { results.append(await resolve(command)) }
        return results
    }

    /// The recorded result when the command was applied before, else the result of applying it now. A handler error
    /// becomes `failed` with the error's type as detail (never its message, which might hold data).
    private func resolve(_ command: EraseSubject) async -> ErasureResult {
        do {
            if let recorded = try await handler.recordedResult(of: command.erasureId) { return recorded }
            return try await handler.apply(command)
        } catch {
            return .failed(by: error)
        }
    }
}
