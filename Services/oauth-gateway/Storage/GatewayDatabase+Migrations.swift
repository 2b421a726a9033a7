import ErasureKit
import GRDB
import Storage

extension GatewayDatabase {
    static let migrations: [Migration] = [
        Migration("oauth-gateway.v1.schema") { db in
            try db.execute(sql: """
                CREATE TABLE data_keys (
                    id INTEGER PRIMARY KEY,
                    wrapped BLOB NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE TABLE signing_keys (
                    kid TEXT PRIMARY KEY,
                    private_key BLOB NOT NULL,
                    created_at REAL NOT NULL,
                    retired_at REAL
                );
                CREATE TABLE tenants (
                    tenant_id TEXT PRIMARY KEY,
                    secret_hash BLOB NOT NULL,
                    return_urls TEXT NOT NULL DEFAULT '[]',
                    erasure_policy TEXT NOT NULL DEFAULT 'delete',
                    deadline_days INTEGER NOT NULL DEFAULT 30,
                    app_id TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE apps (
                    app_id TEXT PRIMARY KEY,
                    tenant_id TEXT,
                    shared INTEGER NOT NULL,
                    client_secret BLOB,
                    callback_url TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    owner_connection_id TEXT
                );
                CREATE TABLE connections (
                    connection_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    account_id TEXT,
                    user_id TEXT NOT NULL,
                    state TEXT NOT NULL,
                    test INTEGER NOT NULL,
                    access_token BLOB,
                    access_expires_at REAL,
                    refresh_token BLOB,
                    created_at REAL NOT NULL,
                    last_active_at REAL NOT NULL,
                    lease_owner TEXT,
                    lease_until REAL,
                    UNIQUE (tenant_id, app_id, account_id)
                );
                CREATE INDEX connections_by_app ON connections(app_id, state, last_active_at);
                CREATE INDEX connections_by_account ON connections(app_id, account_id);
                CREATE TABLE signin_states (
                    state_hash BLOB PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    app_id TEXT NOT NULL,
                    redirect_uri TEXT NOT NULL,
                    tenant_state TEXT,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE signin_codes (
                    code_hash BLOB PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    connection_id TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE suppressed_accounts (
                    account_id TEXT PRIMARY KEY,
                    erasure_id TEXT NOT NULL,
                    suppressed_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
        },
        // Sign-in states and codes became sealed values carried by the flow itself (SealedSignInState,
        // SealedSignInCode): only their single use is recorded, under a random nonce, until they expire.
        Migration("oauth-gateway.v2.signin-nonces") { db in
            try db.execute(sql: """
                DROP TABLE signin_states;
                DROP TABLE signin_codes;
                CREATE TABLE signin_nonces (
                    nonce BLOB PRIMARY KEY,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX signin_nonces_by_expiry ON signin_nonces(expires_at);
                """)
        },
        // The suppression list keeps digests, not accountIds (see `SuppressionDigest`): a closed account's accountId
        // leaves the file with its erasure. Entries of older files are converted here; secure_delete zeroes the dropped
        // table's pages, and the service checkpoints its WAL at start.
        Migration("oauth-gateway.v3.suppression-digests") { db in
            let entries = try Row.fetchAll(db, sql: "SELECT account_id, erasure_id, suppressed_at FROM suppressed_accounts")
            try db.execute(sql: """
                CREATE TABLE suppressed_accounts_v3 (
                    account_digest TEXT PRIMARY KEY,
                    erasure_id TEXT NOT NULL,
                    suppressed_at REAL NOT NULL
                ) WITHOUT ROWID;
                """)
            for entry in entries {
                try db.execute(
                    sql: "INSERT OR IGNORE INTO suppressed_accounts_v3 VALUES (?, ?, ?)",
                    arguments: [SuppressionDigest.of(accountId: entry["account_id"]), entry["erasure_id"],
                                entry["suppressed_at"]])
            }
            try db.execute(sql: """
                DROP TABLE suppressed_accounts;
                ALTER TABLE suppressed_accounts_v3 RENAME TO suppressed_accounts;
                """)
        },
        // When each connection's current refresh token was issued: Atlassian's rotating tokens die after 90 idle
        // days (ATLASSIAN.md §1.5), so ConnectionKeepAlive refreshes those that get old. Older rows take their
        // creation time: at worst refreshed sooner than needed.
        Migration("oauth-gateway.v4.refresh-issued-at") { db in
            try db.execute(sql: """
                ALTER TABLE connections ADD COLUMN refreshed_at REAL;
                UPDATE connections SET refreshed_at = created_at;
                CREATE INDEX connections_by_refresh ON connections(state, refreshed_at);
                """)
        },
        // Access tokens of the OpenID flow revoked because their authorization code was presented again (RFC 9700
        // §4.5.3), kept until the token would have expired anyway.
        Migration("oauth-gateway.v5.revoked-access-tokens") { db in
            try db.execute(sql: """
                CREATE TABLE revoked_access_tokens (
                    token_id BLOB PRIMARY KEY,
                    expires_at REAL NOT NULL
                ) WITHOUT ROWID;
                CREATE INDEX revoked_access_tokens_by_expiry ON revoked_access_tokens(expires_at);
                """)
        },
        // An operator can disable a tenant (and enable it again): sign-ins refused, its credentials and tokens too.
        Migration("oauth-gateway.v6.tenant-disabled") { db in
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN disabled_at REAL")
        },
        // A tenant's public OpenID clients (browser and mobile apps: no secret, PKCE required).
        Migration("oauth-gateway.v7.public-clients") { db in
            try db.execute(sql: """
                CREATE TABLE public_clients (
                    client_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL,
                    redirect_uris TEXT NOT NULL,
                    created_at REAL NOT NULL
                );
                CREATE INDEX public_clients_by_tenant ON public_clients(tenant_id);
                """)
        },
        // The Atlassian scopes the operator allows a tenant beyond the required ones (space-separated).
        Migration("oauth-gateway.v8.tenant-allowed-scopes") { db in
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN allowed_scopes TEXT NOT NULL DEFAULT ''")
        },
        // Shared Signals: each tenant's stream, the Security Event Tokens waiting for delivery (claims only: signed
        // at each delivery), and which of a tenant's users an open erasure concerns, for its account-purged event.
        Migration("oauth-gateway.v9.shared-signals") { db in
            try db.execute(sql: """
                CREATE TABLE ssf_streams (
                    stream_id TEXT PRIMARY KEY,
                    tenant_id TEXT NOT NULL UNIQUE,
                    delivery_method TEXT NOT NULL,
                    endpoint_url TEXT,
                    authorization_header BLOB,
                    events_requested TEXT NOT NULL,
                    status TEXT NOT NULL,
                    reason TEXT,
                    description TEXT,
                    last_delivered_at REAL,
                    last_error TEXT,
                    created_at REAL NOT NULL,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE ssf_events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    stream_id TEXT NOT NULL,
                    jti TEXT NOT NULL UNIQUE,
                    claims BLOB NOT NULL,
                    created_at REAL NOT NULL,
                    next_attempt_at REAL NOT NULL,
                    attempts INTEGER NOT NULL,
                    last_error TEXT,
                    dead_at REAL
                );
                CREATE INDEX ssf_events_by_stream ON ssf_events(stream_id, seq);
                CREATE TABLE ssf_erasure_subjects (
                    subject_digest BLOB NOT NULL,
                    user_id TEXT NOT NULL,
                    tenant_id TEXT NOT NULL,
                    erasure_id TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    PRIMARY KEY (subject_digest, user_id)
                ) WITHOUT ROWID;
                CREATE INDEX ssf_erasure_subjects_by_erasure ON ssf_erasure_subjects(erasure_id);
                """)
        },
        // What the gateway keeps to tell which fields an `updated` changed: sealed digests (ProfileDigests).
        Migration("oauth-gateway.v10.profile-digests") { db in
            try db.execute(sql: "ALTER TABLE connections ADD COLUMN profile_digests BLOB")
        },
        // The rows the active replica's transactions changed, listed by its capture triggers until GatewayChangelog has
        // published them on lethe.gateway.state.v1 (GatewayDatabase+Changelog): the key of each, typed as in its table.
        // And when this file was last read back (a file never read back is not dropped at start: it may be the only
        // copy of its state).
        Migration("oauth-gateway.v11.changelog") { db in
            try db.execute(sql: """
                CREATE TABLE gateway_changes (
                    seq INTEGER PRIMARY KEY,
                    tbl TEXT NOT NULL,
                    k1 NOT NULL,
                    k2,
                    listed_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
                );
                CREATE TABLE gateway_changelog_meta (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    read_back_at REAL NOT NULL
                );
                """)
        },
        // A listing's seq never comes back (AUTOINCREMENT; an INTEGER PRIMARY KEY restarts at 1 once the table is
        // empty): an acknowledgement waits until the publisher has gone past the newest listing it saw (Durability).
        // Listings kept as they are. And the staging table an early build of v11 made, if this file has it.
        Migration("oauth-gateway.v12.changelog-sequence") { db in
            try db.execute(sql: """
                CREATE TABLE gateway_changes_v12 (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    tbl TEXT NOT NULL,
                    k1 NOT NULL,
                    k2,
                    listed_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
                );
                INSERT INTO gateway_changes_v12 (seq, tbl, k1, k2, listed_at)
                    SELECT seq, tbl, k1, k2, listed_at FROM gateway_changes;
                DROP TABLE gateway_changes;
                ALTER TABLE gateway_changes_v12 RENAME TO gateway_changes;
                DROP TABLE IF EXISTS gateway_read_back;
                """)
        },
    ]
}
