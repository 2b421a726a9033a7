import Contracts
import Testing

@Suite("Topics")
struct TopicsTests {
    @Test func everyArchitectureTopicIsDefinedOnce() {
        #expect(Topics.all.map(\.name) == [
            "lethe.tenants.v1", "lethe.profiles.v1", "lethe.pdr.accounts.v1", "lethe.pdr.reports.v1",
            "lethe.pdr.status.v1", "lethe.erasure.requests.v1", "lethe.erasure.commands.v1",
            "lethe.erasure.acks.v1", "lethe.erasure.participants.v1", "lethe.erasure.completed.v1",
            "lethe.erasure.state.v1", "lethe.profiles.state.v1", "lethe.gateway.state.v1", "lethe.replicas.v1",
        ])
        #expect(Set(Topics.all.map(\.name)).count == Topics.all.count)
    }

    @Test func stateTopicsAreCompactedAndKeptForever() {
        let compacted = Topics.all.filter(\.compacted)
        #expect(compacted == [
            Topics.tenants, Topics.pdrAccounts, Topics.pdrReports, Topics.erasureParticipants,
            Topics.erasureCompleted, Topics.erasureState, Topics.profileState, Topics.gatewayState, Topics.replicas,
        ])
        #expect(Topics.all.filter(\.compacted).allSatisfy { $0.retentionMs == nil })
        #expect(Topics.tenants.kafkaConfig == [
            "cleanup.policy": "compact", "retention.ms": "-1",
        ])
        // Every compacted topic that names an account (in its keys or its values): what an erasure replaced or
        // tombstoned is compacted away within 7 days, not whenever the broker gets round to the segment.
        #expect(Topics.profileState.kafkaConfig == [
            "cleanup.policy": "compact", "retention.ms": "-1", "max.compaction.lag.ms": "604800000",
        ])
        #expect(Topics.all.filter { $0.maxCompactionLagMs != nil } == [
            Topics.pdrAccounts, Topics.pdrReports, Topics.erasureState, Topics.profileState, Topics.gatewayState,
        ])
        #expect(Topics.all.filter { $0.compacted && $0.key == .account }.allSatisfy {
            $0.maxCompactionLagMs == TopicDefinition.sevenDaysMs
        })
    }

    @Test func profilesAreKeptSevenDaysAndOtherEventTopicsThirty() {
        #expect(Topics.profiles.retentionMs == 604_800_000)
        for topic in [Topics.pdrStatus, Topics.erasureRequests, Topics.erasureCommands, Topics.erasureAcks] {
            #expect(topic.retentionMs == 2_592_000_000)
            #expect(!topic.compacted)
        }
        #expect(Topics.profiles.kafkaConfig == [
            "cleanup.policy": "delete", "retention.ms": "604800000",
        ])
    }

    @Test func dlqIsTheTopicNameWithADlqSuffix() {
        #expect(Topics.dlq(for: Topics.erasureCommands.name) == "lethe.erasure.commands.v1.dlq")
        let definition = Topics.dlqDefinition(for: Topics.pdrAccounts.name)
        #expect(definition.name == "lethe.pdr.accounts.v1.dlq")
        #expect(!definition.compacted)
        #expect(definition.retentionMs == 2_592_000_000)
        #expect(Topics.dlqErrorHeader == "lethe_error")
        // A dead letter of personal data lives no longer than its source topic keeps it, namespaced or not.
        let namespaced = LetheTopics(namespace: "test-ns")
        #expect(Topics.dlqDefinition(for: Topics.profiles.name).retentionMs == TopicDefinition.sevenDaysMs)
        #expect(Topics.dlqDefinition(for: namespaced.profiles).retentionMs == TopicDefinition.sevenDaysMs)
        #expect(Topics.dlqDefinition(for: namespaced.erasureCommands).retentionMs == 2_592_000_000)
    }

    @Test func pdrTopicsAreCoPartitionedAndPartitionsDefaultToTwelve() {
        #expect(Topics.coPartitioned.map(\.name) == ["lethe.pdr.accounts.v1", "lethe.pdr.reports.v1"])
        #expect(Topics.defaultPartitionCount == 12)
        #expect(Topics.definition(ofNamespaced: "unknown.topic") == nil)
    }

    @Test("every declaration is in Topics.all, a namespace prefixes its name, and a topic carries only its events")
    func declarationsCoverEveryTopicAndEvent() {
        let paths: [KeyPath<Topics.Type, TopicDefinition>] = [
            \.tenants, \.profiles, \.pdrAccounts, \.pdrReports, \.pdrStatus, \.erasureRequests, \.erasureCommands,
            \.erasureAcks, \.erasureParticipants, \.erasureCompleted, \.erasureState, \.profileState, \.gatewayState, \.replicas,
        ]
        #expect(paths.map { Topics.definition(of: $0) } == Topics.all)
        let namespaced = LetheTopics(namespace: "run-1")
        #expect(namespaced.profiles == "run-1.lethe.profiles.v1" && LetheTopics(namespace: nil).profiles == "lethe.profiles.v1")
        #expect(paths.map { namespaced[dynamicMember: $0] } == Topics.all.map { "run-1." + $0.name })
        #expect(Topics.carries(namespaced.profiles, ProfileFetched.self))
        #expect(!Topics.carries(namespaced.profiles, EraseSubject.self))
        #expect(Topics.carries(Topics.erasureAcks.name, ErasureAcknowledged.self))
        // Topics Lethe does not declare (a test's own), and DLQs, carry whatever they are given.
        #expect(Topics.carries("t-1234", EraseSubject.self) && Topics.carries(Topics.dlq(for: namespaced.profiles), EraseSubject.self))
        #expect(Topics.erasureAcks.key == .erasureId && Topics.pdrAccounts.tombstones)
        #expect(Topics.dlqDefinition(for: namespaced.erasureAcks).key == .erasureId)
        // The lease topic: one partition whatever the configuration; its reader logs what it cannot use (no DLQ).
        #expect(Topics.replicas.partitions == 1 && !Topics.replicas.deadLettered && Topics.replicas.compacted)
        #expect(Topics.carries(Topics.replicas.name, ReplicaActivated.self))
        #expect(Topics.all.filter { $0.partitions != nil } == [Topics.replicas])
        // Without a DLQ: the lease topic, and the changelogs (their readers log what they cannot use).
        #expect(Topics.all.filter { !$0.deadLettered } == [
            Topics.erasureState, Topics.profileState, Topics.gatewayState, Topics.replicas,
        ])
        #expect(Topics.carries(Topics.profileState.name, ProfilesHeld.self) && Topics.profileState.tombstones)
        #expect(Topics.carries(Topics.erasureState.name, ErasureState.self) && Topics.carries(Topics.erasureState.name, ParticipantRetired.self))
    }
}
