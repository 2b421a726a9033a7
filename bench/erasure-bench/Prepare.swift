import Contracts
import Foundation
import Messaging
import ServiceLifecycle
import Synchronization

// MARK: prepare

func prepare(bootstrap: String, namespace: String, count: Int, partitions: Int) async throws {
    let topics = LetheTopics(namespace: namespace)
    try await KafkaAdmin(bootstrapServers: bootstrap, logger: makeLogger()).ensureTopics([
        TopicSpec(Topics.tenants, in: topics, partitions: partitions),
        TopicSpec(Topics.profiles, in: topics, partitions: partitions),
    ])
    var tenants: [OutgoingMessage] = []
    for (index, policy) in tenantPolicies.enumerated() {
        let event = TenantConfigured(
            tenantId: "tenant-\(index)", erasurePolicy: policy,
            apps: apps.map { TenantConfigured.App(appId: $0, shared: false) }, deadlineDays: 30)
        tenants.append(try OutgoingMessage(
            event: event, topic: topics.tenants, key: event.tenantId, source: "lethe/erasure-bench"))
    }
    let base = Date().addingTimeInterval(-3600)
    var profiles: [OutgoingMessage] = []
    profiles.reserveCapacity(count)
    for index in 0..<count {
        let event = ProfileFetched(
            tenantId: tenantId(index), appId: appId(index), accountId: accountId(index),
            name: "Bench User \(index)", email: "user\(index)@example.com", nickname: "user\(index)",
            picture: "https://avatar.example/\(index).png", fetchedAt: base.addingTimeInterval(Double(index) / 1000))
        profiles.append(try OutgoingMessage(
            event: event, topic: topics.profiles, key: "\(event.appId):\(event.accountId)",
            source: "lethe/erasure-bench"))
    }
    let start = ContinuousClock.now
    let batches = [tenants, profiles]
    try await withProducer(bootstrap) { producer in
        for batch in batches { try await producer.send(batch) }
    }
    note("published \(tenants.count) TenantConfigured and \(count) ProfileFetched in \(ContinuousClock.now - start)")
}

// MARK: wait-held

func waitHeld(bootstrap: String, namespace: String, count: Int, timeout: Double, pid: Int32) async throws {
    let topics = LetheTopics(namespace: namespace)
    let deadline = ContinuousClock.now + .seconds(timeout)
    let seen = Mutex<Set<String>>([])
    let dog = watchdog(pids: [("profile-store", pid)], deadline: deadline) {
        "profile-store announced \(seen.withLock { $0.count }) of \(count) accounts"
    }
    let logger = makeLogger()
    let admin = try KafkaAdmin(bootstrapServers: bootstrap, logger: logger)
    var partitions = 0
    while partitions == 0 {
        partitions = (try? await admin.partitionCount(of: topics.pdrAccounts)) ?? 0
        if partitions == 0 { try await Task.sleep(for: .milliseconds(200)) }
    }
    let consumer = try KafkaConsumer(
        config: KafkaConsumerConfig(
            bootstrapServers: bootstrap,
            subscription: .partitions((0..<partitions).map {
                (TopicPartition(topic: topics.pdrAccounts, partition: Int32($0)), from: .beginning)
            }),
            clientId: "erasure-bench-held"),
        logger: logger)
    let group = ServiceGroup(configuration: .init(services: [.init(service: consumer)], logger: logger))
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        for try await message in consumer.messages {
            guard message.value != nil, let key = message.keyString, key.contains(":557058:erasure-bench-") else {
                continue
            }
            if seen.withLock({ $0.insert(key); return $0.count }) >= count { break }
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    dog.cancel()
    note("profile-store holds all \(count) bench accounts (AccountHeld read in \(ContinuousClock.now - start))")
}
