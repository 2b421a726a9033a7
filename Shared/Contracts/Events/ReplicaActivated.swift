import Foundation

/// A replica of a service that runs one active replica at a time became the active one, on `lethe.replicas.v1`
/// (compacted, keyed by the service's name): the latest record of a service says where its active replica answers,
/// so a standby forwards the requests it receives there instead of refusing them. Written by ServiceRuntime's
/// `ReplicaLease` at each activation, read by every replica of the service; nothing else uses it.
package struct ReplicaActivated: LetheEvent {
    /// `lethe.ReplicaActivated`.
    package static let eventType = "lethe.ReplicaActivated"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The service's name (`oauth-gateway`): the record key.
    package var service: String
    /// An id the replica drew when its process started: a restarted replica is a new one.
    package var replica: String
    /// Where its public listener answers (`http://10.0.3.7:8080`), as the other replicas reach it.
    package var url: String
    /// Where its internal listener answers, when it has one (`HTTP_INTERNAL_PORT`).
    package var internalUrl: String?
    package var activatedAt: Date

    /// Makes the event.
    package init(service: String, replica: String, url: String, internalUrl: String?, activatedAt: Date) {
        self.service = service
        self.replica = replica
        self.url = url
        self.internalUrl = internalUrl
        self.activatedAt = activatedAt
    }
}
