import CRdKafka
import Foundation
import Logging

// The C side of a consumer (KafkaConsumer.swift is its Swift API): librdkafka's consumer queue, the context its
// callbacks find, the poll thread's loop that copies records out of C memory, and the rebalance callback.

/// The consumer queue handle, shared by the poll thread and the code that wakes it.
final class ConsumerQueue: @unchecked Sendable {
    let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) { self.pointer = pointer }

    /// Called once, after the poll thread has stopped.
    func destroy() { rd_kafka_queue_destroy(pointer) }
}

/// What librdkafka's callbacks reach (through the handle's opaque pointer): where to yield events, and the flow
/// control that lets a revocation wait for the application.
final class ConsumerContext: RdKafkaCallbackContext, @unchecked Sendable {
    let continuation: AsyncThrowingStream<[ConsumerEvent], any Error>.Continuation
    let flow: FlowControl
    let revocationTimeout: Duration

    init(logger: Logger, continuation: AsyncThrowingStream<[ConsumerEvent], any Error>.Continuation,
         flow: FlowControl, revocationTimeout: Duration) {
        self.continuation = continuation
        self.flow = flow
        self.revocationTimeout = revocationTimeout
        super.init(logger: logger)
    }

    /// Yields events and returns the sequence number of the last one.
    @discardableResult
    func yield(_ events: [ConsumerEvent]) -> Int {
        let sequence = flow.didYield(events.count)
        continuation.yield(events)
        return sequence
    }
}

/// The body of the consumer's poll thread: fetch a batch, copy it out, destroy the C messages, yield.
final class ConsumerPollLoop: @unchecked Sendable {
    private let handle: RdKafkaHandle
    private let queue: OpaquePointer
    private let context: ConsumerContext
    private var buffer: [UnsafeMutablePointer<rd_kafka_message_t>?]
    private var topicNames: [OpaquePointer: String] = [:]  // touched by the poll thread only
    private static let batchSize = 1000

    init(handle: RdKafkaHandle, queue: OpaquePointer, context: ConsumerContext) {
        self.handle = handle
        self.queue = queue
        self.context = context
        self.buffer = .init(repeating: nil, count: Self.batchSize)
    }

    func pollOnce() {
        guard context.flow.waitForRoom() else { return }
        // Wait for one message, then take what else is there without waiting: the batch call returns only when the
        // batch is full or the timeout has passed, so one call with the full size would hold a lone record for up to
        // 100 ms — per hop, at every rate below a full batch per 100 ms.
        let count = buffer.withUnsafeMutableBufferPointer { pointer -> Int in
            let first = rd_kafka_consume_batch_queue(queue, 100, pointer.baseAddress, 1)
            guard first > 0, let base = pointer.baseAddress else { return first }
            let rest = rd_kafka_consume_batch_queue(queue, 0, base + 1, Self.batchSize - 1)
            return first + max(rest, 0)
        }
        guard count > 0 else { return }
        var events: [ConsumerEvent] = []
        events.reserveCapacity(count)
        for index in 0..<count {
            guard let message = buffer[index] else { continue }
            defer { rd_kafka_message_destroy(message) }
            if message.pointee.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                report(message)
                continue
            }
            events.append(.message(copy(message)))
        }
        if !events.isEmpty { context.yield(events) }
    }

    private func report(_ message: UnsafeMutablePointer<rd_kafka_message_t>) {
        let error = KafkaError(message.pointee.err, message: rd_kafka_message_errstr(message).map { String(cString: $0) })
        if error.isFatal || message.pointee.err == RD_KAFKA_RESP_ERR__FATAL {
            context.logger.critical("Kafka consumer failed fatally", metadata: ["kafka.error": "\(error.name)"])
            context.continuation.finish(throwing: error)
            context.flow.stop()
        } else {
            context.logger.warning("Kafka consumer error", metadata: ["kafka.error": "\(error.name)",
                                                                      "kafka.message": "\(error.message)"])
        }
    }

    private func copy(_ message: UnsafeMutablePointer<rd_kafka_message_t>) -> KafkaMessage {
        let m = message.pointee
        let topic: String
        if let rkt = m.rkt, let known = topicNames[rkt] {
            topic = known
        } else {
            topic = String(cString: rd_kafka_topic_name(m.rkt))
            if let rkt = m.rkt { topicNames[rkt] = topic }
        }
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) }
        var headers: [KafkaHeader] = []
        var cHeaders: OpaquePointer?
        if rd_kafka_message_headers(message, &cHeaders) == RD_KAFKA_RESP_ERR_NO_ERROR, let cHeaders {
            var index = 0
            var name: UnsafePointer<CChar>?
            var valuePointer: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(cHeaders, index, &name, &valuePointer, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                let bytes = valuePointer.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                headers.append(KafkaHeader(name: name.map { String(cString: $0) } ?? "", value: bytes))
                index += 1
            }
        }
        var timestampType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &timestampType)
        return KafkaMessage(
            topic: topic, partition: m.partition, offset: m.offset, key: key, value: value, headers: headers,
            timestampMilliseconds: timestampType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : timestamp
        )
    }
}

/// Runs on the poll thread during a group rebalance. It must itself assign or unassign: the whole assignment under
/// the eager protocol (range), only the partitions that change under the cooperative one (cooperative-sticky), where
/// the events then name just those.
let rebalanceCallback: @convention(c) (
    OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?
) -> Void = { rk, err, partitions, _ in
    guard let rk, let context = RdKafkaHandle.context(of: rk, as: ConsumerContext.self) else { return }
    let changed = topicPartitions(of: partitions)
    let cooperative = rd_kafka_rebalance_protocol(rk).map { String(cString: $0) } == "COOPERATIVE"
    switch err {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        let assignErr: rd_kafka_resp_err_t
        if cooperative {
            let error = rd_kafka_incremental_assign(rk, partitions)
            assignErr = error.map { rd_kafka_error_code($0) } ?? RD_KAFKA_RESP_ERR_NO_ERROR
            if let error { rd_kafka_error_destroy(error) }
        } else {
            assignErr = rd_kafka_assign(rk, partitions)
        }
        if assignErr != RD_KAFKA_RESP_ERR_NO_ERROR {
            context.logger.error("assigning partitions failed", metadata: ["kafka.error": "\(KafkaError(assignErr).name)"])
        }
        context.logger.debug("partitions assigned", metadata: ["kafka.partitions": "\(changed)"])
        context.yield([.partitionsAssigned(changed)])
    default:  // RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS, or an error: give everything up
        let sequence = context.yield([.partitionsRevoked(changed)])
        // Let the application finish the records it already has and commit them while the partitions are still ours.
        if !context.flow.waitUntilHandled(sequence, timeout: context.revocationTimeout) {
            context.logger.debug("revocation proceeded without the application's acknowledgement")
        }
        if cooperative {
            if let error = rd_kafka_incremental_unassign(rk, partitions) { rd_kafka_error_destroy(error) }
        } else {
            _ = rd_kafka_assign(rk, nil)
        }
        context.logger.debug("partitions revoked", metadata: ["kafka.partitions": "\(changed)"])
    }
}
