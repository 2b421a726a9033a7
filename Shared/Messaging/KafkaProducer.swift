import CRdKafka
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Producer settings. Durability is not configurable: `acks=all` with idempotence is always on, so a send that
/// returned is on every in-sync replica and a retried send is never written twice.
package struct KafkaProducerConfig: Sendable {
    package var bootstrapServers: String
    package var clientId: String
    /// How long librdkafka keeps retrying one message before its send fails (`message.timeout.ms`).
    package var deliveryTimeout: Duration
    /// How long to wait for more messages to fill a batch (`linger.ms`).
    package var linger: Duration
    /// How long a graceful shutdown waits for outstanding messages.
    package var flushTimeout: Duration
    /// Further librdkafka settings, for tuning; they cannot weaken the durability settings above.
    package var extraSettings: [String: String]

    package init(
        bootstrapServers: String,
        clientId: String = "lethe",
        deliveryTimeout: Duration = .seconds(120),
        linger: Duration = .milliseconds(5),
        flushTimeout: Duration = .seconds(30),
        extraSettings: [String: String] = [:]
    ) {
        self.bootstrapServers = bootstrapServers
        self.clientId = clientId
        self.deliveryTimeout = deliveryTimeout
        self.linger = linger
        self.flushTimeout = flushTimeout
        self.extraSettings = extraSettings
    }

    var settings: [String: String] {
        var settings = extraSettings
        settings["bootstrap.servers"] = bootstrapServers
        settings["client.id"] = clientId
        settings["message.timeout.ms"] = String(deliveryTimeout.milliseconds)
        settings["linger.ms"] = String(linger.milliseconds)
        settings["acks"] = "all"
        settings["enable.idempotence"] = "true"
        // Same key → partition mapping as the Java client and Kafka Streams, so topics that share keys and partition
        // counts stay co-partitioned whoever produces to them.
        settings["partitioner"] = "murmur2_random"
        return settings
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

/// Produces records and returns only once the broker acknowledged them (the delivery report), so a caller that
/// marks work done after `send` returns never loses it.
///
/// Run it as a `Service` in the process's `ServiceGroup`, listed before the services that send through it: a group
/// shuts its services down in reverse order, so those stop first, and then the producer flushes what is still in
/// flight before the handle is destroyed.
package final class KafkaProducer: Service, @unchecked Sendable {
    private let handle: RdKafkaHandle
    private let context: ProducerContext
    private let config: KafkaProducerConfig
    private let logger: Logger
    private let pollThread: PollThread
    private let topics: TopicHandles

    package init(config: KafkaProducerConfig, logger: Logger) throws(KafkaError) {
        let context = ProducerContext(logger: logger)
        self.handle = try RdKafkaHandle(type: RD_KAFKA_PRODUCER, settings: config.settings, context: context) { conf in
            rd_kafka_conf_set_dr_msg_cb(conf, deliveryReportCallback)
        }
        self.topics = TopicHandles(client: handle)
        self.context = context
        self.config = config
        self.logger = logger
        // Delivery reports are served by rd_kafka_poll; the thread runs for the producer's lifetime.
        // The thread captures the handle, so the handle is destroyed only after the last poll.
        let handle = self.handle
        // A short poll timeout: rd_kafka_yield does not wake an idle rd_kafka_poll, and shutdown waits for the
        // current poll to return. 100 idle wake-ups a second cost nothing measurable.
        self.pollThread = PollThread(name: "kafka-producer-poll") { _ = rd_kafka_poll(handle.pointer, 10) }
    }

    deinit {
        // Normally stopped by run(); a producer dropped without running must not leave its thread polling.
        pollThread.requestStop()
    }

    /// Sends one record and waits for the broker's acknowledgement.
    @discardableResult
    package func send(_ message: OutgoingMessage) async throws(KafkaError) -> DeliveryReport {
        let reports = try await deliver([message], collectReports: true)
        return reports[0]
    }

    /// Sends records and waits until every one is acknowledged. Order is kept per partition. If any fails, the
    /// first error is thrown after all have settled; the others may have been written (at-least-once).
    package func send(_ messages: [OutgoingMessage]) async throws(KafkaError) {
        guard !messages.isEmpty else { return }
        _ = try await deliver(messages, collectReports: false)
    }

    private func deliver(_ messages: [OutgoingMessage], collectReports: Bool) async throws(KafkaError) -> [DeliveryReport] {
        guard !context.tracker.isClosed else { throw .shutDown }
        let batch = context.tracker.begin(count: messages.count, collectReports: collectReports)
        for (index, message) in messages.enumerated() {
            while true {
                let err = enqueue(message, batch: batch)
                if err == RD_KAFKA_RESP_ERR_NO_ERROR { break }
                if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                    // The local queue drains as the poll thread serves delivery reports.
                    try? await Task.sleep(for: .milliseconds(1))
                    continue
                }
                context.tracker.abandon(batch, count: messages.count - index, error: KafkaError(err))
                return try await context.tracker.wait(for: batch)
            }
        }
        return try await context.tracker.wait(for: batch)
    }

    /// Hands one record to librdkafka (copying key, value and headers), tagged with its batch id.
    private func enqueue(_ message: OutgoingMessage, batch: UInt) -> rd_kafka_resp_err_t {
        var headers: OpaquePointer? = nil
        if !message.headers.isEmpty {
            headers = rd_kafka_headers_new(message.headers.count)
            for header in message.headers {
                header.value.withUnsafeBytes { bytes in
                    _ = rd_kafka_header_add(headers, header.name, -1, bytes.baseAddress, bytes.count)
                }
            }
        }
        let topic = topics.handle(for: message.topic)
        let err = withOptionalBytes(message.key) { key in
            withOptionalBytes(message.value) { value in
                withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 7) { values in
                    var count = 0
                    func append(_ type: rd_kafka_vtype_t, _ set: (inout rd_kafka_vu_t) -> Void) {
                        var entry = rd_kafka_vu_t()
                        entry.vtype = type
                        set(&entry)
                        values.initializeElement(at: count, to: entry)
                        count += 1
                    }
                    append(RD_KAFKA_VTYPE_RKT) { $0.u.rkt = topic }
                    append(RD_KAFKA_VTYPE_VALUE) {
                        $0.u.mem = .init(ptr: UnsafeMutableRawPointer(mutating: value.baseAddress), size: value.count)
                    }
                    append(RD_KAFKA_VTYPE_KEY) {
                        $0.u.mem = .init(ptr: UnsafeMutableRawPointer(mutating: key.baseAddress), size: key.count)
                    }
                    append(RD_KAFKA_VTYPE_MSGFLAGS) { $0.u.i = RD_KAFKA_MSG_F_COPY }
                    append(RD_KAFKA_VTYPE_OPAQUE) { $0.u.ptr = UnsafeMutableRawPointer(bitPattern: batch) }
                    // RD_KAFKA_PARTITION_UA (-1) lets the partitioner choose.
                    append(RD_KAFKA_VTYPE_PARTITION) { $0.u.i32 = message.partition ?? -1 }
                    if let headers { append(RD_KAFKA_VTYPE_HEADERS) { $0.u.headers = headers } }
                    defer { values.baseAddress!.deinitialize(count: count) }
                    guard let error = rd_kafka_produceva(handle.pointer, values.baseAddress, count) else {
                        return RD_KAFKA_RESP_ERR_NO_ERROR
                    }
                    let code = rd_kafka_error_code(error)
                    rd_kafka_error_destroy(error)
                    return code
                }
            }
        }
        // On success librdkafka owns the headers; on failure they are still ours.
        if err != RD_KAFKA_RESP_ERR_NO_ERROR, let headers { rd_kafka_headers_destroy(headers) }
        return err
    }

    /// Waits (off the cooperative pool) until every outstanding record is acknowledged or `timeout` passes.
    package func flush(timeout: Duration) async throws(KafkaError) {
        let handle = self.handle
        let milliseconds = Int32(clamping: timeout.milliseconds)
        try await BlockingCalls.run { () throws(KafkaError) in
            let err = rd_kafka_flush(handle.pointer, milliseconds)
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, message: "flush did not complete") }
        }
    }

    /// The fatal error librdkafka raised for this producer, if any: it can send nothing more (readiness reads it).
    package var fatalError: KafkaError? { context.fatal.error }

    /// Throws the fatal error, if one was raised: for a readiness check.
    package func checkNotFatal() throws(KafkaError) {
        if let fatalError { throw fatalError }
    }

    /// Makes librdkafka raise a fatal error, as an idempotent producer does when the broker fences it (tests only:
    /// there is no other way to cause one on purpose).
    package func raiseFatalErrorForTesting() {
        _ = rd_kafka_test_fatal_error(handle.pointer, RD_KAFKA_RESP_ERR__FENCED, "raised by a test")
    }

    /// Waits for graceful shutdown, then flushes and stops polling. A fatal producer error ends it at once by
    /// throwing: the service group then stops every service and the process exits non-zero, so the orchestrator
    /// restarts it with a new producer — instead of every send failing for ever while the process looks alive.
    package func run() async throws {
        let fatal: KafkaError? = await withTaskGroup(of: KafkaError?.self) { group in
            group.addTask { try? await gracefulShutdown(); return nil }
            group.addTask { [context] in await context.fatal.wait() }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if let fatal {
            logger.critical("Kafka producer failed fatally; stopping the service", metadata: [
                "kafka.error": "\(fatal.name)", "kafka.message": "\(fatal.message)",
            ])
            await pollThread.stop()
            context.tracker.close()
            throw fatal
        }
        do {
            try await flush(timeout: config.flushTimeout)
        } catch {
            logger.error("producer flush at shutdown failed; unacknowledged messages are lost to this process",
                         metadata: ["kafka.error": "\(error.name)"])
        }
        await pollThread.stop()
        context.tracker.close()
    }
}

/// Borrows bytes for a C call; nil becomes a null pointer with size 0 (a tombstone value or a keyless record).
private func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    guard let bytes else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    return bytes.withUnsafeBytes(body)
}

/// librdkafka topic handles by name, created on first use and kept for the producer's lifetime: producing by handle
/// skips a name lookup (and a C string conversion) per record.
final class TopicHandles: @unchecked Sendable {
    private let handles = Mutex<[String: OpaquePointer]>([:])
    /// Kept so the client outlives its topic handles.
    private let client: RdKafkaHandle

    init(client: RdKafkaHandle) { self.client = client }

    func handle(for topic: String) -> OpaquePointer {
        handles.withLock { handles in
            if let existing = handles[topic] { return existing }
            let created = rd_kafka_topic_new(client.pointer, topic, nil)!
            handles[topic] = created
            return created
        }
    }

    deinit {
        handles.withLock { $0.values.forEach { rd_kafka_topic_destroy($0) } }
    }
}

final class ProducerContext: RdKafkaCallbackContext, @unchecked Sendable {
    let tracker = DeliveryTracker()
}

/// Matches delivery reports to the `send` calls waiting for them. Each call is a batch with an id carried as the
/// per-message opaque; the batch resumes its caller once every message in it has a report.
final class DeliveryTracker: Sendable {
    private struct Batch {
        var remaining: Int
        var firstError: KafkaError?
        var reports: [DeliveryReport]?
        var continuation: CheckedContinuation<[DeliveryReport], any Error>?
    }

    private let state = Mutex<(nextID: UInt, batches: [UInt: Batch], closed: Bool)>((1, [:], false))

    static func wantsReports(_ id: UInt) -> Bool { id & 1 == 1 }

    func begin(count: Int, collectReports: Bool) -> UInt {
        state.withLock { state in
            // The low bit says whether the batch wants reports, so the callback can skip building them; ids are never
            // 0, which would be a null opaque.
            let id = state.nextID << 1 | (collectReports ? 1 : 0)
            state.nextID = state.nextID >= UInt.max >> 2 ? 1 : state.nextID + 1
            state.batches[id] = Batch(remaining: count, reports: collectReports ? [] : nil)
            return id
        }
    }

    /// Called from the poll thread for every delivery report.
    func delivered(batch id: UInt, report: DeliveryReport?, error: KafkaError?) {
        let finished: (CheckedContinuation<[DeliveryReport], any Error>, Batch)? = state.withLock { state in
            guard var batch = state.batches[id] else { return nil }
            batch.remaining -= 1
            if let error, batch.firstError == nil { batch.firstError = error }
            if let report { batch.reports?.append(report) }
            if batch.remaining == 0, let continuation = batch.continuation {
                state.batches[id] = nil
                return (continuation, batch)
            }
            state.batches[id] = batch
            return nil
        }
        if let (continuation, batch) = finished { Self.resume(continuation, with: batch) }
    }

    /// Messages that were never handed to librdkafka count as failed with `error`.
    func abandon(_ id: UInt, count: Int, error: KafkaError) {
        state.withLock { state in
            state.batches[id]?.remaining -= count
            if state.batches[id]?.firstError == nil { state.batches[id]?.firstError = error }
        }
    }

    func wait(for id: UInt) async throws(KafkaError) -> [DeliveryReport] {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let done: Batch? = state.withLock { state in
                    guard var batch = state.batches[id] else { return nil }
                    if state.closed && batch.remaining > 0 {
                        // No report can come any more: the poll thread has stopped.
                        batch.remaining = 0
                        batch.firstError = batch.firstError ?? .shutDown
                    }
                    if batch.remaining <= 0 {
                        state.batches[id] = nil
                        return batch
                    }
                    state.batches[id]?.continuation = continuation
                    return nil
                }
                if let done { Self.resume(continuation, with: done) }
            }
        } catch let error as KafkaError {
            throw error
        } catch {
            throw KafkaError.shutDown
        }
    }

    /// The producer has stopped serving delivery reports: every send still waiting, and every later one, fails with
    /// ``KafkaError/shutDown`` instead of waiting for ever.
    func close() {
        let waiting: [CheckedContinuation<[DeliveryReport], any Error>] = state.withLock { state in
            state.closed = true
            let continuations = state.batches.values.compactMap(\.continuation)
            state.batches = state.batches.filter { $0.value.continuation == nil }
            return continuations
        }
        for continuation in waiting { continuation.resume(throwing: KafkaError.shutDown) }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    private static func resume(_ continuation: CheckedContinuation<[DeliveryReport], any Error>, with batch: Batch) {
        if let error = batch.firstError {
            continuation.resume(throwing: error)
        } else {
            continuation.resume(returning: batch.reports ?? [])
        }
    }
}

/// Runs on the producer's poll thread for every acknowledged or failed message.
private let deliveryReportCallback: @convention(c) (
    OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?
) -> Void = { rk, message, _ in
    guard let message, let context = RdKafkaHandle.context(of: rk, as: ProducerContext.self) else { return }
    let batch = UInt(bitPattern: message.pointee._private)
    if message.pointee.err != RD_KAFKA_RESP_ERR_NO_ERROR {
        context.tracker.delivered(batch: batch, report: nil, error: KafkaError(message.pointee.err))
        return
    }
    guard DeliveryTracker.wantsReports(batch) else {
        context.tracker.delivered(batch: batch, report: nil, error: nil)
        return
    }
    let report = DeliveryReport(
        topic: String(cString: rd_kafka_topic_name(message.pointee.rkt)),
        partition: message.pointee.partition,
        offset: message.pointee.offset
    )
    context.tracker.delivered(batch: batch, report: report, error: nil)
}
