import Contracts
import Testing

@Suite("Topics")
struct TopicsTests {
    @Test func everyArchitectureTopicIsDefinedOnce() {
        #expect(Topics.all.map(\.name) == [
            "lethe.tenants.v1", "lethe.profiles.v1", "lethe.pdr.accounts.v1", "lethe.pdr.reports.v1",
            "lethe.pdr.status.v1", "lethe.erasure.requests.v1", "lethe.erasure.commands.v1",
            "lethe.erasure.acks.v1", "lethe.erasure.participants.v1", "lethe.erasure.completed.v1",
        ])
        #expect(Set(Topics.all.map(\.name)).count == Topics.all.count)
    }

    @Test func stateTopicsAreCompactedAndKeptForever() {
        let compacted = Topics.all.filter(\.compacted).map(\.name)
        #expect(compacted == [
            Topics.tenants, Topics.pdrAccounts, Topics.pdrReports, Topics.erasureParticipants,
            Topics.erasureCompleted,
        ])
        #expect(Topics.all.filter(\.compacted).allSatisfy { $0.retentionMs == nil })
        #expect(Topics.definition(named: Topics.pdrAccounts)?.kafkaConfig == [
            "cleanup.policy": "compact", "retention.ms": "-1",
        ])
    }

    @Test func profilesAreKeptSevenDaysAndOtherEventTopicsThirty() {
        #expect(Topics.definition(named: Topics.profiles)?.retentionMs == 604_800_000)
        for name in [Topics.pdrStatus, Topics.erasureRequests, Topics.erasureCommands, Topics.erasureAcks] {
            #expect(Topics.definition(named: name)?.retentionMs == 2_592_000_000)
            #expect(Topics.definition(named: name)?.compacted == false)
        }
        #expect(Topics.definition(named: Topics.profiles)?.kafkaConfig == [
            "cleanup.policy": "delete", "retention.ms": "604800000",
        ])
    }

    @Test func dlqIsTheTopicNameWithADlqSuffix() {
        #expect(Topics.dlq(for: Topics.erasureCommands) == "lethe.erasure.commands.v1.dlq")
        let definition = Topics.dlqDefinition(for: Topics.pdrAccounts)
        #expect(definition.name == "lethe.pdr.accounts.v1.dlq")
        #expect(!definition.compacted)
        #expect(definition.retentionMs == 2_592_000_000)
        #expect(Topics.dlqErrorHeader == "lethe_error")
        // A dead letter of personal data lives no longer than its source topic keeps it, namespaced or not.
        #expect(Topics.dlqDefinition(for: Topics.profiles).retentionMs == TopicDefinition.sevenDaysMs)
        #expect(Topics.dlqDefinition(for: "test-ns." + Topics.profiles).retentionMs == TopicDefinition.sevenDaysMs)
        #expect(Topics.dlqDefinition(for: "test-ns." + Topics.erasureCommands).retentionMs == 2_592_000_000)
    }

    @Test func pdrTopicsAreCoPartitionedAndPartitionsDefaultToTwelve() {
        #expect(Topics.coPartitioned == ["lethe.pdr.accounts.v1", "lethe.pdr.reports.v1"])
        #expect(Topics.defaultPartitionCount == 12)
        #expect(Topics.definition(named: "unknown.topic") == nil)
    }
}
