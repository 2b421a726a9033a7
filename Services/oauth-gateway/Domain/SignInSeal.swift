import Crypto
import Foundation

/// A pending sign-in, carried by Atlassian's `state` parameter itself rather than by a row: sealed with ``SecretBox``
/// (AES-GCM, so it can be neither read nor altered), bound to its purpose, and good for one callback within
/// ``Gateway/stateLifetime``. Single use is enforced by ``nonce``: the callback refuses a nonce that is in flight in
/// this process or recorded in `signin_nonces`, and records it in the transaction that completes the sign-in.
///
/// Sealing instead of storing takes a synced SQLite write and a read-modify-write off every sign-in start: the start
/// becomes one read, and the callback one read before the token exchange.
struct SealedSignInState: Sendable, Equatable {
    var tenantId: String
    var appId: String
    /// SHA-256 of the return URL the sign-in started with. The callback goes back only to a return URL that hashes to
    /// this *and* is still on the tenant's list, so removing a return URL also stops sign-ins in flight towards it.
    var returnURLHash: Data
    var tenantState: String
    var expiresAt: Date
    /// 16 random bytes: what single use is recorded under.
    var nonce: Data
    /// Set when the sign-in is an OpenID Connect authorization request (`/oauth/authorize`): what the client asked
    /// for, bound to the code the callback issues. Nil for the gateway's own sign-in API.
    var openID: OpenIDRequest? = nil

    /// The associated data of every sealed state: a sealed sign-in code (or any other sealed value) does not open as
    /// a state, nor a state as anything else.
    static let context = "signin_state:v1"

    func seal(with box: SecretBox) throws -> String {
        var fields = SealedFields()
        fields.append(tenantId)
        fields.append(appId)
        fields.append(returnURLHash)
        fields.append(tenantState)
        fields.append(expiresAt)
        fields.append(nonce)
        if let openID { fields.append(openID) }
        return try SealedValue.seal(fields, context: Self.context, with: box)
    }

    /// The state, if `text` is one this gateway sealed (it may have expired; the caller checks).
    static func open(_ text: String, with box: SecretBox) -> SealedSignInState? {
        guard var reader = SealedValue.open(text, context: context, maxLength: 4096, with: box),
              let tenantId = reader.string(), let appId = reader.string(), let hash = reader.data(),
              let tenantState = reader.string(), let expiresAt = reader.date(), let nonce = reader.data(),
              nonce.count == 16
        else { return nil }
        var openID: OpenIDRequest?
        if !reader.isAtEnd {
            guard let request = reader.openIDRequest() else { return nil }
            openID = request
        }
        guard reader.isAtEnd else { return nil }
        return SealedSignInState(
            tenantId: tenantId, appId: appId, returnURLHash: hash, tenantState: tenantState, expiresAt: expiresAt,
            nonce: nonce, openID: openID)
    }
}

/// The one-time sign-in code the tenant's backend exchanges: the sign-in's result, sealed for that tenant only (the
/// associated data names the tenant, so another tenant's exchange cannot open it and learns nothing), valid for
/// ``Gateway/codeLifetime``. Single use is recorded under ``nonce`` at the exchange, which also checks that the
/// connection is still there (an erasure in the meantime makes the code worthless).
struct SealedSignInCode: Sendable, Equatable {
    var connectionId: String
    var payload: SignInPayload
    var expiresAt: Date
    var nonce: Data

    static func context(tenantId: String) -> String { "signin_code:v1:\(tenantId)" }

    func seal(with box: SecretBox, tenantId: String) throws -> String {
        var fields = SealedFields()
        fields.append(connectionId)
        fields.append(payload)
        fields.append(expiresAt)
        fields.append(nonce)
        return try SealedValue.seal(fields, context: Self.context(tenantId: tenantId), with: box)
    }

    /// The code, if `text` is one this gateway sealed for `tenantId` (it may have expired; the caller checks).
    static func open(_ text: String, tenantId: String, with box: SecretBox) -> SealedSignInCode? {
        guard var reader = SealedValue.open(text, context: context(tenantId: tenantId), maxLength: 8192, with: box),
              let connectionId = reader.string(), let payload = reader.payload(),
              let expiresAt = reader.date(), let nonce = reader.data(), reader.isAtEnd, nonce.count == 16
        else { return nil }
        return SealedSignInCode(connectionId: connectionId, payload: payload, expiresAt: expiresAt, nonce: nonce)
    }
}

/// How every sealed value travels: the AES-GCM of ``SecretBox`` under a context naming its purpose (so no sealed value
/// opens as another kind), in base64url (safe in a query parameter as it is).
enum SealedValue {
    static func seal(_ fields: SealedFields, context: String, with box: SecretBox) throws -> String {
        Base64URL.encode(try box.seal(fields.bytes, context: context))
    }

    /// The fields of `text` when this gateway sealed it under `context`; nil for anything else or anything longer
    /// than `maxLength`.
    static func open(_ text: String, context: String, maxLength: Int, with box: SecretBox) -> SealedFields.Reader? {
        guard text.utf8.count <= maxLength, let sealed = Base64URL.decode(text),
              let plain = try? box.open(sealed, context: context)
        else { return nil }
        return SealedFields.Reader(plain)
    }
}

/// 16 random bytes for a sealed value's single-use record.
enum SignInNonce {
    static func make() -> Data { SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) } }
}

/// A compact, versionless field list (each field: a kind byte, a 4-byte big-endian length, the bytes). Used only
/// inside sealed values, whose layout only this gateway reads; hand-written because JSONEncoder costs more than the
/// AES-GCM around it.
struct SealedFields {
    private(set) var bytes = Data()

    mutating func append(_ text: String) { append(kind: 1, Data(text.utf8)) }
    mutating func append(_ data: Data) { append(kind: 2, data) }
    mutating func append(_ date: Date) { append(kind: 3, Data(String(date.timeIntervalSince1970).utf8)) }
    mutating func appendOptional(_ text: String?) {
        if let text { append(text) } else { append(kind: 0, Data()) }
    }

    private mutating func append(kind: UInt8, _ data: Data) {
        bytes.append(kind)
        withUnsafeBytes(of: UInt32(data.count).bigEndian) { bytes.append(contentsOf: $0) }
        bytes.append(data)
    }

    struct Reader {
        private let bytes: [UInt8]
        private var offset = 0

        init(_ data: Data) { bytes = [UInt8](data) }

        var isAtEnd: Bool { offset == bytes.count }

        private mutating func field() -> (kind: UInt8, value: ArraySlice<UInt8>)? {
            guard bytes.count - offset >= 5 else { return nil }
            let kind = bytes[offset]
            let length = bytes[(offset + 1)..<(offset + 5)].reduce(0) { $0 << 8 | Int($1) }
            guard length <= bytes.count - offset - 5 else { return nil }
            let value = bytes[(offset + 5)..<(offset + 5 + length)]
            offset += 5 + length
            return (kind, value)
        }

        mutating func string() -> String? {
            guard let (kind, value) = field(), kind == 1 else { return nil }
            return Self.text(value)
        }

        /// UTF-8 through the contiguous fast path (a generic slice takes the slow, scalar-by-scalar one).
        private static func text(_ bytes: ArraySlice<UInt8>) -> String {
            bytes.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
        }

        /// `.some(nil)` for an absent value, nil for a malformed field.
        mutating func optionalString() -> String?? {
            guard let (kind, value) = field() else { return nil }
            switch kind {
            case 0: return .some(nil)
            case 1: return .some(Self.text(value))
            default: return nil
            }
        }

        mutating func data() -> Data? {
            guard let (kind, value) = field(), kind == 2 else { return nil }
            return Data(value)
        }

        mutating func date() -> Date? {
            guard let (kind, value) = field(), kind == 3,
                  let seconds = Double(Self.text(value))
            else { return nil }
            return Date(timeIntervalSince1970: seconds)
        }
    }
}

/// base64url without padding (RFC 4648 §5): safe in a query parameter without percent-encoding. Byte by byte,
/// because Foundation's `replacingOccurrences` on a base64 string costs more on Linux than the AES-GCM it wraps.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in alphabet.enumerated() { table[Int(byte)] = UInt8(index) }
        return table
    }()

    static func encode(_ data: Data) -> String {
        let input = [UInt8](data)
        let alphabet = Self.alphabet
        var output = [UInt8]()
        output.reserveCapacity((input.count * 4 + 2) / 3)
        var index = 0
        while index + 3 <= input.count {
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
            output.append(alphabet[Int(chunk >> 18 & 63)])
            output.append(alphabet[Int(chunk >> 12 & 63)])
            output.append(alphabet[Int(chunk >> 6 & 63)])
            output.append(alphabet[Int(chunk & 63)])
            index += 3
        }
        switch input.count - index {
        case 1:
            let chunk = UInt32(input[index]) << 16
            output.append(alphabet[Int(chunk >> 18 & 63)])
            output.append(alphabet[Int(chunk >> 12 & 63)])
        case 2:
            let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8
            output.append(alphabet[Int(chunk >> 18 & 63)])
            output.append(alphabet[Int(chunk >> 12 & 63)])
            output.append(alphabet[Int(chunk >> 6 & 63)])
        default:
            break
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// nil unless `text` is canonical unpadded base64url (no padding, no other characters, no stray bits).
    static func decode(_ text: String) -> Data? {
        var input = [UInt8]()
        input.reserveCapacity(text.utf8.count)
        let values = Self.values
        for byte in text.utf8 {
            let value = values[Int(byte)]
            guard value != 0xFF else { return nil }
            input.append(value)
        }
        guard input.count % 4 != 1 else { return nil }
        var output = Data()
        output.reserveCapacity(input.count * 3 / 4)
        var index = 0
        while index + 4 <= input.count {
            let chunk = UInt32(input[index]) << 18 | UInt32(input[index + 1]) << 12 | UInt32(input[index + 2]) << 6
                | UInt32(input[index + 3])
            output.append(UInt8(chunk >> 16 & 0xFF))
            output.append(UInt8(chunk >> 8 & 0xFF))
            output.append(UInt8(chunk & 0xFF))
            index += 4
        }
        switch input.count - index {
        case 2:
            guard input[index + 1] & 0x0F == 0 else { return nil }
            output.append(input[index] << 2 | input[index + 1] >> 4)
        case 3:
            guard input[index + 2] & 0x03 == 0 else { return nil }
            output.append(input[index] << 2 | input[index + 1] >> 4)
            output.append((input[index + 1] & 0x0F) << 4 | input[index + 2] >> 2)
        default:
            break
        }
        return output
    }
}
