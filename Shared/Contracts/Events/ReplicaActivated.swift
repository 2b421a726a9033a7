import Foundation

/// A replica became the active one, on `lethe.replicas.v1` (compacted): of its whole service, for a service that runs
/// one active replica at a time (keyed by the service's name: a standby forwards the requests it receives there), or
/// of one partition, for a service whose replicas own partitions (`partition` set, keyed `<service>#<partition>`:
/// another replica forwards a request about that partition's data there). The latest record of a key says where its
/// active replica answers. Written by ServiceRuntime's `ReplicaDirectory` at each activation or assignment, read by
/// every replica of the service; nothing else uses it.
package struct ReplicaActivated: LetheEvent {
    /// `lethe.ReplicaActivated`.
    package static let eventType = "lethe.ReplicaActivated"
    /// 1.1: `partition`.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 1)

    /// The service's name (`oauth-gateway`): the record key, with `#<partition>` when `partition` is set.
    package var service: String
    /// An id the replica drew when its process started: a restarted replica is a new one.
    package var replica: String
    /// Where its public listener answers (`http://10.0.3.7:8080`), as the other replicas reach it.
    package var url: String
    /// Where its internal listener answers, when it has one (`HTTP_INTERNAL_PORT`).
    package var internalUrl: String?
    package var activatedAt: Date
    /// The partition (of the service's partitioned topics) this replica now owns; absent when it is active for the
    /// whole service.
    package var partition: Int32?

    /// The record key: the service's name, with `#<partition>` for a partition's owner.
    package var key: String { partition.map { "\(service)#\($0)" } ?? service }

    /// Makes the event.
    package init(
        service: String, replica: String, url: String, internalUrl: String?, activatedAt: Date, partition: Int32? = nil
    ) {
        self.service = service
        self.partition = partition
        self.replica = replica
        self.url = url
        self.internalUrl = internalUrl
        self.activatedAt = activatedAt
    }
}
