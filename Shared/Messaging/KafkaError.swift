import CRdKafka

/// The one error type of `Messaging`: a librdkafka error code with its name, a message, and whether retrying the
/// same operation may succeed (`isRetriable`) or the client is unusable and must be recreated (`isFatal`).
package struct KafkaError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The raw `rd_kafka_resp_err_t`: negative values are local (client-side) errors, positive ones are broker errors.
    package var code: Int32
    /// librdkafka's symbolic name, e.g. `_MSG_TIMED_OUT` or `TOPIC_ALREADY_EXISTS`.
    package var name: String
    /// What happened, for logs. Never contains payloads.
    package var message: String
    package var isRetriable: Bool
    package var isFatal: Bool

    package init(code: Int32, name: String, message: String, isRetriable: Bool, isFatal: Bool) {
        self.code = code
        self.name = name
        self.message = message
        self.isRetriable = isRetriable
        self.isFatal = isFatal
    }

    /// An error from a bare response code; retriability follows librdkafka's transient codes.
    init(_ err: rd_kafka_resp_err_t, message: String? = nil, fatal: Bool = false) {
        self.init(
            code: err.rawValue,
            name: String(cString: rd_kafka_err2name(err)),
            message: message ?? String(cString: rd_kafka_err2str(err)),
            isRetriable: !fatal && Self.transientCodes.contains(err.rawValue),
            isFatal: fatal
        )
    }

    /// Takes over an `rd_kafka_error_t`, which carries its own retriable and fatal flags, and destroys it.
    init(consuming error: OpaquePointer) {
        defer { rd_kafka_error_destroy(error) }
        let err = rd_kafka_error_code(error)
        self.init(
            code: err.rawValue,
            name: String(cString: rd_kafka_error_name(error)),
            message: String(cString: rd_kafka_error_string(error)),
            isRetriable: rd_kafka_error_is_retriable(error) != 0 || Self.transientCodes.contains(err.rawValue),
            isFatal: rd_kafka_error_is_fatal(error) != 0
        )
    }

    /// A setting librdkafka refused, or a misuse of this API. Never retriable.
    static func invalidArgument(_ message: String) -> KafkaError {
        KafkaError(RD_KAFKA_RESP_ERR__INVALID_ARG, message: message)
    }

    /// The client was shut down while the operation waited.
    package static let shutDown = KafkaError(RD_KAFKA_RESP_ERR__DESTROY, message: "the Kafka client is shut down")

    package var description: String { "Kafka error \(name) (\(code)): \(message)" }

    /// Codes after which the same call can succeed later: timeouts, leadership moves, rebalances, broker restarts.
    private static let transientCodes: Set<Int32> = Set([
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR__TIMED_OUT,
        RD_KAFKA_RESP_ERR__QUEUE_FULL, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__WAIT_COORD,
        RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION, RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    ].map(\.rawValue))
}
