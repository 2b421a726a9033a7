import Foundation

/// One row of oauth-gateway's state as it is after a change, on `lethe.gateway.state.v1` (compacted, private to
/// oauth-gateway, keyed `<table>:<primary key>`): tenants, apps, public clients, data and signing keys, connections
/// (the token vault), the suppression list, the single use of sign-in values, Shared Signals streams and the events
/// they have yet to deliver, the erasures applied. The active replica publishes every row its transactions change
/// (SQLite triggers list them; a tombstone when the row was deleted) before it acknowledges them, and a replica that becomes active reads the topic back into its file
/// first: so a standby with a volume of its own, or an active replica that lost its volume, takes over with
/// everything. Secrets stay as the file keeps them: tokens, client secrets and signing keys sealed under data keys,
/// data keys wrapped under the master key, tenant secrets hashed.
package struct GatewayRowChanged: LetheEvent {
    /// `lethe.GatewayRowChanged`.
    package static let eventType = "lethe.GatewayRowChanged"
    /// 1.0.
    package static let schemaVersion = SchemaVersion(major: 1, minor: 0)

    /// The gateway's table (`tenants`, `connections`, …).
    package var table: String
    /// The row's columns as text, NULL ones left out: an integer or a real in decimal, a BLOB column's value
    /// in base64.
    package var columns: [String: String]

    /// Makes the event.
    package init(table: String, columns: [String: String]) {
        self.table = table
        self.columns = columns
    }
}
