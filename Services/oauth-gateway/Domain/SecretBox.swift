import Crypto
import Foundation
import Synchronization

/// Envelope encryption for everything secret the gateway stores: app client secrets, Atlassian access and refresh
/// tokens, signing keys, and the short-lived sign-in payload.
///
/// Each value is sealed with AES-256-GCM under a *data key* with a fresh random nonce; the data keys live in the
/// `data_keys` table, themselves sealed under `LETHE_MASTER_KEY`, which is never stored. A value is also bound to
/// where it lives (the associated data names its table, row and column), so a ciphertext copied into another row
/// does not open. Sealed layout: version byte `1`, data key id (4 bytes, big-endian), then GCM's nonce ‖ ciphertext ‖
/// tag.
///
/// Data keys rotate (``rotate()``): the newest key seals from then on, ``DataKeyRotation`` re-seals what is stored
/// under older ones and then deletes them. The ring is reloaded from the database when a value names a key this
/// process does not know (another replica rotated) and on every rotation round.
final class SecretBox: Sendable {
    private struct Ring {
        var keys: [UInt32: SymmetricKey]
        var active: UInt32
        /// When an unknown key id last made this process read the keys again: at most once a second, so values with
        /// made-up key ids (a forged state in a URL) cannot turn into a database read each.
        var lastMissReload: ContinuousClock.Instant?
    }

    private let master: SymmetricKey
    /// `LETHE_MASTER_KEY_PREVIOUS`, while the master key changes: the keys it still wraps are wrapped again.
    private let previousMaster: SymmetricKey?
    private let database: GatewayDatabase
    private let ring: Mutex<Ring>

    struct WrongMasterKey: Error, CustomStringConvertible {
        var description: String {
            "LETHE_MASTER_KEY does not open this database's data keys (was it changed? set the old one as "
                + "LETHE_MASTER_KEY_PREVIOUS for one start)"
        }
    }

    struct Unreadable: Error, CustomStringConvertible {
        var description: String { "a sealed value could not be opened" }
    }

    /// Loads the data keys (creating the first one on a new database) and unwraps them with `masterKey`. A key that
    /// only `previousMasterKey` opens is wrapped again under `masterKey` and stored so: that is how the master key is
    /// changed (start once with both set).
    init(masterKey: Data, previousMasterKey: Data? = nil, database: GatewayDatabase) throws {
        let master = SymmetricKey(data: masterKey)
        self.master = master
        self.previousMaster = previousMasterKey.map(SymmetricKey.init(data:))
        self.database = database
        let wrapped = try database.wrappedDataKeys { try Self.wrap(SymmetricKey(size: .bits256), id: 1, under: master) }
        let keys = try Self.unwrap(wrapped, master: master, previous: previousMaster, database: database)
        ring = Mutex(Ring(keys: keys, active: wrapped.map(\.0).max()!))
    }

    /// Unwraps every data key with `master`, or else `previous`; a key only `previous` opens is wrapped again under
    /// `master` and stored so.
    private static func unwrap(
        _ wrapped: [(id: UInt32, wrapped: Data)], master: SymmetricKey, previous: SymmetricKey?, database: GatewayDatabase
    ) throws -> [UInt32: SymmetricKey] {
        var keys: [UInt32: SymmetricKey] = [:]
        var rewrapped: [(UInt32, Data)] = []
        for (id, blob) in wrapped {
            if let key = unwrap(blob, id: id, with: master) {
                keys[id] = key
            } else if let previous, let key = unwrap(blob, id: id, with: previous) {
                keys[id] = key
                rewrapped.append((id, try wrap(key, id: id, under: master)))
            } else {
                throw WrongMasterKey()
            }
        }
        if !rewrapped.isEmpty { try database.replaceWrappedDataKeys(rewrapped) }
        return keys
    }

    /// The id of the key new values are sealed with.
    var activeKeyId: UInt32 { ring.withLock { $0.active } }

    /// The ids of the keys held.
    var keyIds: [UInt32] { ring.withLock { $0.keys.keys.sorted() } }

    /// Seals `plaintext`, bound to `context` (e.g. `connection:<id>:refresh_token`).
    func seal(_ plaintext: Data, context: String) throws -> Data {
        let (id, key) = ring.withLock { ($0.active, $0.keys[$0.active]!) }
        let box = try AES.GCM.seal(plaintext, using: key, authenticating: Data(context.utf8))
        var out = Data([1])
        withUnsafeBytes(of: id.bigEndian) { out.append(contentsOf: $0) }
        out.append(box.combined!)
        return out
    }

    func seal(_ text: String, context: String) throws -> Data { try seal(Data(text.utf8), context: context) }

    /// Opens a value sealed with the same `context`.
    func open(_ sealed: Data, context: String) throws -> Data {
        guard let keyId = Self.keyId(of: sealed) else { throw Unreadable() }
        var key = ring.withLock { $0.keys[keyId] }
        if key == nil {
            // Sealed under a key another replica made since this one loaded its ring.
            let now = ContinuousClock.now
            let due = ring.withLock { ring in
                guard ring.lastMissReload.map({ now - $0 >= .seconds(1) }) ?? true else { return false }
                ring.lastMissReload = now
                return true
            }
            if due {
                try? reload()
                key = ring.withLock { $0.keys[keyId] }
            }
        }
        guard let key, let box = try? AES.GCM.SealedBox(combined: Data(sealed.dropFirst(5))),
              let plaintext = try? AES.GCM.open(box, using: key, authenticating: Data(context.utf8))
        else { throw Unreadable() }
        return plaintext
    }

    func openString(_ sealed: Data, context: String) throws -> String {
        guard let text = String(data: try open(sealed, context: context), encoding: .utf8) else { throw Unreadable() }
        return text
    }

    /// The data key id a sealed value names, or nil when it is not a sealed value.
    static func keyId(of sealed: Data) -> UInt32? {
        guard sealed.count > 5, sealed.first == 1 else { return nil }
        return sealed.dropFirst().prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    /// Makes a new data key the one that seals from now on. Returns its id.
    @discardableResult
    func rotate(now: Date = Date()) throws -> UInt32 {
        let master = self.master
        let id = try database.addDataKey(now: now) { id in try Self.wrap(SymmetricKey(size: .bits256), id: id, under: master) }
        try reload()
        return id
    }

    /// Reads the data keys again: a key another replica added (or rotated to), one deleted once nothing needed it, or
    /// the keys a replica becoming active read back from the changelog (wrapped again here if only the previous
    /// master key opens them).
    func reload() throws {
        let wrapped = try database.wrappedDataKeysNow()
        let keys = try Self.unwrap(wrapped, master: master, previous: previousMaster, database: database)
        guard let active = keys.keys.max() else { return }
        ring.withLock {
            $0.keys = keys
            $0.active = active
        }
    }

    private static func wrap(_ key: SymmetricKey, id: UInt32, under master: SymmetricKey) throws -> Data {
        try AES.GCM.seal(key.withUnsafeBytes { Data($0) }, using: master, authenticating: dataKeyContext(id)).combined!
    }

    private static func unwrap(_ blob: Data, id: UInt32, with master: SymmetricKey) -> SymmetricKey? {
        guard let box = try? AES.GCM.SealedBox(combined: blob),
              let raw = try? AES.GCM.open(box, using: master, authenticating: dataKeyContext(id))
        else { return nil }
        return SymmetricKey(data: raw)
    }

    private static func dataKeyContext(_ id: UInt32) -> Data { Data("lethe-data-key:\(id)".utf8) }
}
