import Crypto
import Foundation

/// Envelope encryption for everything secret the gateway stores: app client secrets, Atlassian access and refresh
/// tokens, signing keys, and the short-lived sign-in payload.
///
/// Each value is sealed with AES-256-GCM under a *data key* with a fresh random nonce; the data keys live in the
/// `data_keys` table, themselves sealed under `LETHE_MASTER_KEY`, which is never stored. A value is also bound to
/// where it lives (the associated data names its table, row and column), so a ciphertext copied into another row
/// does not open. Sealed layout: version byte `1`, data key id (4 bytes, big-endian), then GCM's nonce ‖ ciphertext ‖
/// tag.
final class SecretBox: Sendable {
    private let keys: [UInt32: SymmetricKey]
    private let activeKeyId: UInt32

    struct WrongMasterKey: Error, CustomStringConvertible {
        var description: String {
            "LETHE_MASTER_KEY does not open this database's data keys (was it changed?)"
        }
    }

    struct Unreadable: Error, CustomStringConvertible {
        var description: String { "a sealed value could not be opened" }
    }

    /// Loads the data keys (creating the first one on a new database) and unwraps them with `masterKey`.
    init(masterKey: Data, database: GatewayDatabase) throws {
        let master = SymmetricKey(data: masterKey)
        let wrapped = try database.wrappedDataKeys {
            let key = SymmetricKey(size: .bits256)
            return try AES.GCM.seal(
                key.withUnsafeBytes { Data($0) }, using: master, authenticating: Self.dataKeyContext(1)
            ).combined!
        }
        var keys: [UInt32: SymmetricKey] = [:]
        for (id, blob) in wrapped {
            guard let box = try? AES.GCM.SealedBox(combined: blob),
                  let raw = try? AES.GCM.open(box, using: master, authenticating: Self.dataKeyContext(id))
            else { throw WrongMasterKey() }
            keys[id] = SymmetricKey(data: raw)
        }
        self.keys = keys
        self.activeKeyId = wrapped.map(\.0).max()!
    }

    /// Seals `plaintext`, bound to `context` (e.g. `connection:<id>:refresh_token`).
    func seal(_ plaintext: Data, context: String) throws -> Data {
        let box = try AES.GCM.seal(plaintext, using: keys[activeKeyId]!, authenticating: Data(context.utf8))
        var out = Data([1])
        withUnsafeBytes(of: activeKeyId.bigEndian) { out.append(contentsOf: $0) }
        out.append(box.combined!)
        return out
    }

    func seal(_ text: String, context: String) throws -> Data { try seal(Data(text.utf8), context: context) }

    /// Opens a value sealed with the same `context`.
    func open(_ sealed: Data, context: String) throws -> Data {
        let bytes = [UInt8](sealed)
        guard bytes.count > 5, bytes[0] == 1 else { throw Unreadable() }
        let keyId = bytes[1..<5].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard let key = keys[keyId], let box = try? AES.GCM.SealedBox(combined: Data(bytes[5...])),
              let plaintext = try? AES.GCM.open(box, using: key, authenticating: Data(context.utf8))
        else { throw Unreadable() }
        return plaintext
    }

    func openString(_ sealed: Data, context: String) throws -> String {
        guard let text = String(data: try open(sealed, context: context), encoding: .utf8) else { throw Unreadable() }
        return text
    }

    private static func dataKeyContext(_ id: UInt32) -> Data { Data("lethe-data-key:\(id)".utf8) }
}
