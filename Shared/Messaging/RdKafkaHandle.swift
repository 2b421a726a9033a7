import CRdKafka
import Dispatch
import Foundation
import Logging
import Synchronization

/// Builds an `rd_kafka_conf_t` from string settings. The caller owns the result until `rd_kafka_new` takes it.
func makeRdKafkaConf(_ settings: [String: String]) throws(KafkaError) -> OpaquePointer {
    let conf = rd_kafka_conf_new()!
    var errorText = [CChar](repeating: 0, count: 512)
    for (name, value) in settings.sorted(by: { $0.key < $1.key }) {
        if rd_kafka_conf_set(conf, name, value, &errorText, errorText.count) != RD_KAFKA_CONF_OK {
            rd_kafka_conf_destroy(conf)
            throw KafkaError.invalidArgument("setting \(name): \(string(fromErrorBuffer: errorText))")
        }
    }
    return conf
}

/// State reachable from librdkafka's C callbacks through the handle's opaque pointer. C callbacks cannot capture
/// context, so each handle retains one of these (balanced when the handle is destroyed).
class RdKafkaCallbackContext: @unchecked Sendable {
    let logger: Logger
    /// Set once librdkafka reports a fatal error: the client is unusable for good.
    let fatal = FatalSignal()

    init(logger: Logger) { self.logger = logger }
}

/// A client's fatal error, once raised: readable at any time (readiness), and awaitable (the service that must end
/// the process so an orchestrator restarts it with a fresh client).
final class FatalSignal: Sendable {
    private struct State {
        var error: KafkaError?
        var waiters: [Int: CheckedContinuation<KafkaError?, Never>] = [:]
        var nextWaiter = 0
    }

    private let state = Mutex(State())

    var error: KafkaError? { state.withLock { $0.error } }

    /// Records the first fatal error and wakes every waiter; later ones are ignored.
    func raise(_ error: KafkaError) {
        let waiters = state.withLock { state -> [CheckedContinuation<KafkaError?, Never>] in
            guard state.error == nil else { return [] }
            state.error = error
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: error) }
    }

    /// Returns the fatal error once one is raised (at once if it already was); nil when the task is cancelled first.
    func wait() async -> KafkaError? {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> (Bool, KafkaError?) in
                    if let error = state.error { return (true, error) }
                    if Task.isCancelled { return (true, nil) }
                    state.waiters[id] = continuation
                    return (false, nil)
                }
                if resumeNow.0 { continuation.resume(returning: resumeNow.1) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }
}

/// Owns one `rd_kafka_t` and the context its callbacks use. librdkafka handles are thread-safe, hence
/// `@unchecked Sendable`; the pointer never leaves this layer.
final class RdKafkaHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    private let context: Unmanaged<RdKafkaCallbackContext>

    /// Creates the client. `configure` may install callbacks on the conf; the context is set as the conf opaque.
    init(
        type: rd_kafka_type_t,
        settings: [String: String],
        context: RdKafkaCallbackContext,
        configure: (OpaquePointer) -> Void = { _ in }
    ) throws(KafkaError) {
        let conf = try makeRdKafkaConf(settings)
        let retained = Unmanaged.passRetained(context)
        rd_kafka_conf_set_opaque(conf, retained.toOpaque())
        rd_kafka_conf_set_log_cb(conf, rdKafkaLogCallback)
        rd_kafka_conf_set_error_cb(conf, rdKafkaErrorCallback)
        configure(conf)
        var errorText = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(type, conf, &errorText, errorText.count) else {
            // rd_kafka_new takes ownership of conf only on success.
            rd_kafka_conf_destroy(conf)
            retained.release()
            throw KafkaError.invalidArgument(string(fromErrorBuffer: errorText))
        }
        self.pointer = handle
        self.context = retained
    }

    deinit {
        rd_kafka_destroy(pointer)
        context.release()
    }

    /// The callback context of a handle, from inside a C callback.
    static func context<T: RdKafkaCallbackContext>(of rk: OpaquePointer?, as type: T.Type) -> T? {
        guard let rk, let opaque = rd_kafka_opaque(rk) else { return nil }
        return Unmanaged<RdKafkaCallbackContext>.fromOpaque(opaque).takeUnretainedValue() as? T
    }
}

/// librdkafka's own log lines, routed into swift-log (they never contain payloads).
private let rdKafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?)
    -> Void = { rk, level, facility, message in
        guard let context = RdKafkaHandle.context(of: rk, as: RdKafkaCallbackContext.self) else { return }
        let text = message.map { String(cString: $0) } ?? ""
        let facilityText = facility.map { String(cString: $0) } ?? ""
        let swiftLevel: Logger.Level = switch level {
        case ...3: .error
        case 4: .warning
        case 5, 6: .info
        default: .debug
        }
        context.logger.log(level: swiftLevel, "librdkafka: \(text)", metadata: ["kafka.facility": "\(facilityText)"])
    }

/// Client-level errors (brokers down, authentication, fatal idempotence errors). librdkafka retries the transient ones
/// itself, so they are logged; a fatal one makes every later call fail with a fatal `KafkaError`.
private let rdKafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?)
    -> Void = { rk, err, reason, _ in
        guard let context = RdKafkaHandle.context(of: rk, as: RdKafkaCallbackContext.self) else { return }
        let code = rd_kafka_resp_err_t(rawValue: err)
        let text = reason.map { String(cString: $0) } ?? ""
        let level: Logger.Level = code == RD_KAFKA_RESP_ERR__FATAL ? .critical : .warning
        context.logger.log(level: level, "Kafka client error: \(text)", metadata: [
            "kafka.error": "\(String(cString: rd_kafka_err2name(code)))",
        ])
        if code == RD_KAFKA_RESP_ERR__FATAL, let rk {
            var reason = [CChar](repeating: 0, count: 512)
            let underlying = rd_kafka_fatal_error(rk, &reason, reason.count)
            context.fatal.raise(KafkaError(underlying, message: string(fromErrorBuffer: reason), fatal: true))
        }
    }

/// Runs librdkafka calls that block (flush, synchronous commit, close, seek, admin and metadata requests) on
/// dedicated threads, so they never occupy Swift's small cooperative pool.
enum BlockingCalls {
    private static let queue = DispatchQueue(label: "lethe.kafka.blocking", attributes: .concurrent)

    static func run<T: Sendable>(_ body: @escaping @Sendable () throws(KafkaError) -> T) async throws(KafkaError) -> T {
        let result: Result<T, KafkaError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(KafkaError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}

/// A partition list built from Swift values; destroyed with the wrapper, so no path leaks it.
final class RdKafkaPartitionList {
    /// No offset (`RD_KAFKA_OFFSET_INVALID`): for a list that names partitions only (subscribe, pause, resume).
    static let noOffset: Int64 = -1001

    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>

    init(_ entries: [(TopicPartition, offset: Int64)]) {
        pointer = rd_kafka_topic_partition_list_new(Int32(max(entries.count, 1)))
        for (topicPartition, offset) in entries {
            let element = rd_kafka_topic_partition_list_add(pointer, topicPartition.topic, topicPartition.partition)!
            element.pointee.offset = offset
        }
    }

    deinit { rd_kafka_topic_partition_list_destroy(pointer) }

    /// The first per-partition error, if any (seek and commit report failures per element).
    func firstError() -> KafkaError? {
        for index in 0..<Int(pointer.pointee.cnt) {
            let element = pointer.pointee.elems[index]
            if element.err != RD_KAFKA_RESP_ERR_NO_ERROR {
                return KafkaError(element.err, message: "\(String(cString: element.topic))[\(element.partition)]: "
                    + String(cString: rd_kafka_err2str(element.err)))
            }
        }
        return nil
    }
}

/// Reads a C partition list into Swift values without taking ownership.
func topicPartitions(of list: UnsafePointer<rd_kafka_topic_partition_list_t>?) -> [TopicPartition] {
    guard let list else { return [] }
    return (0..<Int(list.pointee.cnt)).map { index in
        let element = list.pointee.elems[index]
        return TopicPartition(topic: String(cString: element.topic), partition: element.partition)
    }
}

/// The text librdkafka wrote into an error buffer (NUL-terminated).
func string(fromErrorBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
