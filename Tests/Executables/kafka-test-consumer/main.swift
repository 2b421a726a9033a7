// A consumer process for crash tests: it records every record it processes, then commits in batches, so a test can
// kill -9 it and check what a restart redelivers. Not shipped; built with the tests.
//
// usage: kafka-test-consumer <bootstrap> <topic> <group> <output-file> <commit-every> [<pause-µs-per-record>]
// The optional pause makes processing slow enough that a test can kill the process mid-stream on a loaded machine.
// output lines: "M <partition> <offset> <value>" per processed record, "C <partition> <next-offset>" per commit.
import Foundation
import Logging
import Messaging
import ServiceLifecycle

let arguments = CommandLine.arguments
guard (6...7).contains(arguments.count), let commitEvery = Int(arguments[5]), commitEvery > 0,
      let pauseMicroseconds = arguments.count == 7 ? Int(arguments[6]) : 0, pauseMicroseconds >= 0
else {
    FileHandle.standardError.write(Data(
        "usage: kafka-test-consumer <bootstrap> <topic> <group> <output> <commit-every> [<pause-µs-per-record>]\n".utf8))
    exit(2)
}
let (bootstrap, topic, group, outputPath) = (arguments[1], arguments[2], arguments[3], arguments[4])
var logger = Logger(label: "kafka-test-consumer")
logger.logLevel = .warning

if !FileManager.default.fileExists(atPath: outputPath) {
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
}
let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
try output.seekToEnd()

let consumer = try KafkaConsumer(
    config: KafkaConsumerConfig(
        bootstrapServers: bootstrap, subscription: .group(id: group, topics: [topic]), sessionTimeout: .seconds(6)),
    logger: logger)

struct Processor: Service {
    let consumer: KafkaConsumer
    let output: FileHandle
    let commitEvery: Int
    let pause: Duration

    func run() async throws {
        var uncommitted: [KafkaMessage] = []
        for try await message in consumer.messages.cancelOnGracefulShutdown() {
            let value = String(decoding: message.value ?? [], as: UTF8.self)
            // Written straight to the file (no user-space buffer), so a kill -9 loses nothing that was processed.
            output.write(Data("M \(message.partition) \(message.offset) \(value)\n".utf8))
            uncommitted.append(message)
            if pause > .zero { try await Task.sleep(for: pause) }
            if uncommitted.count >= commitEvery {
                try await consumer.commit(uncommitted)
                var highest: [Int32: Int64] = [:]
                for m in uncommitted { highest[m.partition] = max(highest[m.partition] ?? -1, m.offset) }
                output.write(Data(highest.map { "C \($0.key) \($0.value + 1)\n" }.joined().utf8))
                uncommitted.removeAll()
            }
        }
    }
}

let serviceGroup = ServiceGroup(
    configuration: .init(
        services: [
            .init(service: consumer),
            .init(service: Processor(
                consumer: consumer, output: output, commitEvery: commitEvery, pause: .microseconds(pauseMicroseconds))),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
try await serviceGroup.run()
