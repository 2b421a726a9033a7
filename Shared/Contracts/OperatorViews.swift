/// Answers of the services' operator APIs that the operator console reads as they are written: one declaration for
/// the service that answers and the console that asks (docs/openapi/ describes them).

/// erasure-executor `GET /v1/erasures/counts`: erasures by status, and the open ones past their deadline.
package struct ErasureCounts: Codable, Sendable, Equatable {
    package var pending: Int
    package var dispatched: Int
    package var needsAttention: Int
    package var completed: Int
    package var open: Int
    package var overdue: Int

    package init(pending: Int, dispatched: Int, needsAttention: Int, completed: Int, open: Int, overdue: Int) {
        self.pending = pending
        self.dispatched = dispatched
        self.needsAttention = needsAttention
        self.completed = completed
        self.open = open
        self.overdue = overdue
    }
}

/// oauth-gateway `GET /v1/ssf/streams`: a tenant's Shared Signals stream as the operator sees it — where and how it
/// delivers (a push endpoint's origin only: a receiver's URL may carry a secret in its path or query) and how delivery
/// stands. Times are RFC 3339.
package struct StreamOverview: Codable, Sendable, Equatable {
    package var tenantId: String
    package var streamId: String
    package var method: String
    package var endpointOrigin: String?
    package var status: String
    package var reason: String?
    package var pending: Int
    package var dead: Int
    package var oldestPendingAt: String?
    package var lastError: String?
    package var lastDeliveredAt: String?

    package init(
        tenantId: String, streamId: String, method: String, endpointOrigin: String?, status: String, reason: String?,
        pending: Int, dead: Int, oldestPendingAt: String?, lastError: String?, lastDeliveredAt: String?
    ) {
        self.tenantId = tenantId
        self.streamId = streamId
        self.method = method
        self.endpointOrigin = endpointOrigin
        self.status = status
        self.reason = reason
        self.pending = pending
        self.dead = dead
        self.oldestPendingAt = oldestPendingAt
        self.lastError = lastError
        self.lastDeliveredAt = lastDeliveredAt
    }
}

/// oauth-gateway `GET /v1/ssf/streams`.
package struct StreamOverviewList: Codable, Sendable, Equatable {
    package var streams: [StreamOverview]

    package init(streams: [StreamOverview]) { self.streams = streams }
}
