import ErasureKit

extension ServiceContext {
    /// This service as an erasure participant (ErasureKit): declared as `name` holding `holds`, consuming the commands
    /// in the group `lethe.erasure.<name>` (inside the namespace) with the session timeout and fetch wait every
    /// consumer of the service uses, acknowledging through the service's producer.
    package func erasureParticipant(
        _ name: String, holds: [String], handler: any ErasureHandler
    ) throws -> ErasureParticipant {
        try ErasureParticipant(
            config: erasureParticipantConfig(name, holds: holds), handler: handler, producer: producer,
            bootstrapServers: config.kafka.bootstrapServers, logger: logger)
    }

    /// This service as an erasure participant that reads the commands with a consumer of its own: it declares, and
    /// acknowledges the batches it is handed, as ``erasureParticipant(_:holds:handler:)`` does.
    package func erasureAcknowledger(
        _ name: String, holds: [String], handler: any ErasureHandler
    ) -> ErasureAcknowledger {
        ErasureAcknowledger(
            config: erasureParticipantConfig(name, holds: holds), handler: handler, producer: producer, logger: logger)
    }

    private func erasureParticipantConfig(_ name: String, holds: [String]) -> ErasureParticipantConfig {
        ErasureParticipantConfig(
            participant: name, holds: holds, groupId: config.group("lethe.erasure.\(name)"),
            commandsTopic: topics.erasureCommands, acksTopic: topics.erasureAcks,
            participantsTopic: topics.erasureParticipants, sessionTimeout: .seconds(6),
            fetchMaxWait: config.kafka.fetchMaxWait)
    }
}
