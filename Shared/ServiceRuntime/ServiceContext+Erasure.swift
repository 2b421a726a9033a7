import ErasureKit

extension ServiceContext {
    /// This service as an erasure participant (ErasureKit): declared as `name` holding `holds`, consuming the commands
    /// in the group `lethe.erasure.<name>` (inside the namespace) with the session timeout and fetch wait every
    /// consumer of the service uses, acknowledging through the service's producer.
    package func erasureParticipant(
        _ name: String, holds: [String], handler: any ErasureHandler
    ) throws -> ErasureParticipant {
        try ErasureParticipant(
            config: ErasureParticipantConfig(
                participant: name, holds: holds, groupId: config.group("lethe.erasure.\(name)"),
                commandsTopic: topics.erasureCommands, acksTopic: topics.erasureAcks,
                participantsTopic: topics.erasureParticipants, sessionTimeout: .seconds(6),
                fetchMaxWait: config.kafka.fetchMaxWait),
            handler: handler, producer: producer, bootstrapServers: config.kafka.bootstrapServers, logger: logger)
    }
}
