import Contracts
import Crypto
import Foundation

/// The audit's keys, all derived from `LETHE_AUDIT_KEY`: the HMAC key of subjects and an Ed25519 signing key.
///
/// The signing key is derived (HMAC of a fixed label) rather than configured separately, so the executor needs one
/// secret; its `keyId` is a hash of the public key, so a verifier can tell which key signed an entry after rotation.
struct AuditKeys: Sendable {
    private let subjectKey: SymmetricKey
    private let signingKey: Curve25519.Signing.PrivateKey
    /// Hex of the first 8 bytes of SHA-256 of the public key.
    let keyId: String

    init(auditKey: String) throws {
        subjectKey = SymmetricKey(data: Data(auditKey.utf8))
        let seed = HMAC<SHA256>.authenticationCode(for: Data("lethe-audit-signing-v1".utf8), using: subjectKey)
        signingKey = try Curve25519.Signing.PrivateKey(rawRepresentation: Data(seed))
        keyId = SHA256.hash(data: signingKey.publicKey.rawRepresentation).prefix(8).hex
    }

    /// The public key, base64: what a verifier outside the executor needs.
    var publicKeyBase64: String { signingKey.publicKey.rawRepresentation.base64EncodedString() }

    /// Hex HMAC-SHA256 of `appId:accountId`: whoever knows the account can recompute it, nobody can invert it.
    func subject(appId: String, accountId: String) -> String {
        HMAC<SHA256>.authenticationCode(for: Data("\(appId):\(accountId)".utf8), using: subjectKey).hex
    }

    /// Base64 Ed25519 signature over the UTF-8 bytes of the hex `entryHash`.
    func sign(entryHash: String) throws -> String {
        try signingKey.signature(for: Data(entryHash.utf8)).base64EncodedString()
    }

    /// Whether `signature` is this key's signature of `entryHash`.
    func isValid(signature: String, entryHash: String) -> Bool {
        guard let bytes = Data(base64Encoded: signature) else { return false }
        return signingKey.publicKey.isValidSignature(bytes, for: Data(entryHash.utf8))
    }
}

/// One audit-chain entry. `entryHash` is SHA-256 of ``canonicalBytes`` (which include `previousHash`), so changing or
/// removing any entry breaks the link of every later one.
///
/// Canonical encoding (`lethe-audit-v1`): JSON with sorted keys and no whitespace, of the fields below except
/// `entryHash`, `signature` and `keyId`; times are integer milliseconds since the epoch, outcomes sorted by
/// participant. JSON rather than a hand-rolled format so that no field value can forge a separator.
struct AuditEntry: Codable, Sendable, Equatable {
    /// The `previousHash` of the first entry.
    static let genesisHash = String(repeating: "0", count: 64)

    struct Outcome: Codable, Sendable, Equatable {
        var participant: String
        var outcome: ErasureOutcome
        var atMs: Int64
    }

    var format = "lethe-audit-v1"
    var sequence: Int
    var erasureId: String
    var subject: String
    var tenantId: String
    var policy: ErasurePolicy
    var cause: ErasureCause
    var outcomes: [Outcome]
    var completedAtMs: Int64
    var previousHash: String
    var entryHash: String = ""
    var signature: String = ""
    var keyId: String = ""

    /// The bytes `entryHash` covers.
    var canonicalBytes: Data { canonicalBytes(using: Self.canonicalEncoder()) }

    /// ``canonicalBytes`` with a caller's encoder, which must be a ``canonicalEncoder()``: a batch of completions
    /// shares one instead of configuring one per entry.
    func canonicalBytes(using encoder: JSONEncoder) -> Data {
        struct Canonical: Encodable {
            var format: String
            var sequence: Int
            var erasureId: String
            var subject: String
            var tenantId: String
            var policy: ErasurePolicy
            var cause: ErasureCause
            var outcomes: [Outcome]
            var completedAtMs: Int64
            var previousHash: String
        }
        let canonical = Canonical(
            format: format, sequence: sequence, erasureId: erasureId, subject: subject, tenantId: tenantId,
            policy: policy, cause: cause, outcomes: outcomes.sorted { $0.participant < $1.participant },
            completedAtMs: completedAtMs, previousHash: previousHash)
        // Encoding plain strings, integers and enums cannot fail.
        return (try? encoder.encode(canonical)) ?? Data()
    }

    /// The encoder of the canonical encoding: sorted keys, no whitespace, slashes unescaped.
    static func canonicalEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// Hex SHA-256 of ``canonicalBytes``.
    var computedHash: String { SHA256.hash(data: canonicalBytes).hex }

    /// ``computedHash`` with a caller's ``canonicalEncoder()``.
    func computedHash(using encoder: JSONEncoder) -> String { SHA256.hash(data: canonicalBytes(using: encoder)).hex }

    /// The receipt published in `ErasureCompleted`.
    var receipt: ErasureReceipt {
        ErasureReceipt(
            sequence: sequence, entryHash: entryHash, previousHash: previousHash, signature: signature, keyId: keyId)
    }
}

/// The answer of `GET /v1/audit/verify`.
struct AuditVerification: Codable, Sendable, Equatable {
    /// Whether every entry links, hashes and verifies.
    var ok: Bool
    /// Entries checked.
    var entries: Int
    /// The sequence of the first entry that does not check out, if any.
    var firstBrokenSequence: Int?
    /// Why it does not (a fixed phrase, no data).
    var reason: String?
    /// The key entries are verified with.
    var keyId: String
    /// Its public key (Ed25519, base64), so anyone can re-verify an export.
    var publicKey: String

    /// Walks the chain in order and stops at the first broken link.
    static func verify(_ entries: [AuditEntry], keys: AuditKeys) -> AuditVerification {
        var previous = AuditEntry.genesisHash
        for (index, entry) in entries.enumerated() {
            let problem: String? =
                if entry.sequence != index + 1 { "sequence gap" }
                else if entry.previousHash != previous { "previousHash does not match the previous entry" }
                else if entry.computedHash != entry.entryHash { "entryHash does not match the entry's content" }
                else if entry.keyId != keys.keyId { "signed with an unknown key" }
                else if !keys.isValid(signature: entry.signature, entryHash: entry.entryHash) { "bad signature" }
                else { nil }
            if let problem {
                return AuditVerification(
                    ok: false, entries: entries.count, firstBrokenSequence: entry.sequence, reason: problem,
                    keyId: keys.keyId, publicKey: keys.publicKeyBase64)
            }
            previous = entry.entryHash
        }
        return AuditVerification(
            ok: true, entries: entries.count, firstBrokenSequence: nil, reason: nil, keyId: keys.keyId,
            publicKey: keys.publicKeyBase64)
    }
}

extension Sequence<UInt8> {
    /// Lower-case hex. By table rather than `String(format:)`, which cost more than the HMAC it printed (every
    /// erasure's subject is one).
    var hex: String {
        var digits: [UInt8] = []
        digits.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            digits.append(hexDigits[Int(byte >> 4)])
            digits.append(hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: digits, as: UTF8.self)
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

extension Date {
    /// Milliseconds since the epoch, the precision of events and the audit.
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    init(milliseconds: Int64) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
