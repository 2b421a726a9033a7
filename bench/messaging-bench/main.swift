// Produces or consumes messages through Messaging and prints the rate, for bench/messaging.sh, which runs kcat on
// the same broker in the same run and prints the ratios.
//
// usage: messaging-bench create <bootstrap> <topic> <partitions>
//        messaging-bench produce <bootstrap> <topic> <count> <size>
//        messaging-bench consume <bootstrap> <topic> <count>     (reads partition 0 from the beginning)
// prints one line: "<mode> <count> <seconds>"
import Foundation
import Logging
import Messaging
import ServiceLifecycle

let logger: Logger = {
    var logger = Logger(label: "messaging-bench")
    logger.logLevel = .warning
    return logger
}()
let arguments = CommandLine.arguments
guard arguments.count >= 5, let count = Int(arguments[4]), count > 0 else {
    FileHandle.standardError.write(Data("usage: messaging-bench produce|consume <bootstrap> <topic> <count> [size]\n".utf8))
    exit(2)
}
let (mode, bootstrap, topic) = (arguments[1], arguments[2], arguments[3])

/// Runs `service` alongside `body` and shuts it down when `body` returns.
func withService(_ service: any Service, _ body: @escaping @Sendable () async throws -> Void) async throws {
    let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        try await body()
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

switch mode {
case "create":
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger)
        .ensureTopics([TopicSpec(name: topic, partitions: count)])
case "produce":
    let size = arguments.count > 5 ? Int(arguments[5]) ?? 200 : 200
    let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
    let payload = [UInt8](repeating: UInt8(ascii: "x"), count: size)
    // Sent in chunks of CHUNK (default: all at once), each awaited until the broker acknowledged all of it.
    let chunk = ProcessInfo.processInfo.environment["CHUNK"].flatMap { Int($0) } ?? count
    let messages = (0..<count).map { _ in OutgoingMessage(topic: topic, key: nil, value: payload, partition: nil) }
    let start = ContinuousClock.now
    try await withService(producer) {
        var index = 0
        while index < messages.count {
            let end = min(index + chunk, messages.count)
            try await producer.send(Array(messages[index..<end]))
            index = end
        }
        if ProcessInfo.processInfo.environment["BENCH_DEBUG"] != nil {
            FileHandle.standardError.write(Data("sent after \(ContinuousClock.now - start)\n".utf8))
        }
    }
    let elapsed = ContinuousClock.now - start
    print("produce \(count) \(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))")
case "consume":
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap,
            subscription: .partitions([(TopicPartition(topic: topic, partition: 0), from: .beginning)])),
        logger: logger)
    let start = ContinuousClock.now
    try await withService(consumer) {
        var received = 0
        for try await _ in consumer.messages {
            received += 1
            if received == count { break }
        }
    }
    let elapsed = ContinuousClock.now - start
    print("consume \(count) \(Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))")
default:
    FileHandle.standardError.write(Data("unknown mode \(mode)\n".utf8))
    exit(2)
}
