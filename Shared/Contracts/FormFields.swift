import Foundation

/// Name/value pairs in `application/x-www-form-urlencoded` form: every query string and every form body.
///
/// RFC 6749 §4.1.1 and Appendix B make OAuth request parameters form-encoded, where `+` is a space and `%2B` a plus;
/// browsers submitting a form, Python's `urlencode` and most OAuth libraries write spaces as `+`. Hummingbird's
/// `uri.queryParameters` percent-decodes but keeps `+`, so `scope=read:me+offline_access` read through it is one
/// scope, not two (issue 21). Every service reads queries and form bodies through this type instead (ServiceKit's
/// `FormFields(query:)` for a request), and writes them with `encode` and `queryString`.
///
/// Decoding follows the WHATWG URL standard's `application/x-www-form-urlencoded` parser: split on `&`, drop empty
/// pieces, split each at its first `=`, `+` → space, then percent-decode bytes; a `%` not followed by two hex digits
/// stays as it is, and bytes that are not UTF-8 become U+FFFD. Nothing is refused: the caller validates values.
package struct FormFields: Sendable, Equatable {
    /// Every pair, in order, duplicates kept.
    package let pairs: [(name: String, value: String)]

    package init(pairs: [(name: String, value: String)]) { self.pairs = pairs }

    /// Parses `text`, a query string without its `?`, or a form body.
    package init(decoding text: some StringProtocol) {
        pairs = Substring(text).utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true).map { piece in
            if let equals = piece.firstIndex(of: UInt8(ascii: "=")) {
                return (Self.decode(piece[..<equals]), Self.decode(piece[piece.index(after: equals)...]))
            }
            return (Self.decode(piece[...]), "")
        }
    }

    /// The first value of `name`, or nil: a repeated parameter is not merged, and the first one wins everywhere.
    package subscript(name: String) -> String? { pairs.first { $0.name == name }?.value }

    /// Name → first value, for code that looks fields up by name.
    package var firstValues: [String: String] {
        var result: [String: String] = [:]
        for (name, value) in pairs where result[name] == nil { result[name] = value }
        return result
    }

    package static func == (lhs: FormFields, rhs: FormFields) -> Bool {
        lhs.pairs.elementsEqual(rhs.pairs) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The pairs as a query string or form body (no leading `?`); nil values are left out.
    package static func queryString(_ pairs: [(String, String?)]) -> String {
        pairs.compactMap { name, value in value.map { "\(encode(name))=\(encode($0))" } }.joined(separator: "&")
    }

    /// Percent-encodes every byte but RFC 3986's unreserved characters, so the value reads back the same through
    /// any decoder: form (`+` is a space), plain percent-decoding, or Hummingbird's. Byte by byte, because
    /// Foundation's `addingPercentEncoding` is slow on Linux for the gateway's long sealed values.
    package static func encode(_ value: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: "~"):
                output.append(byte)
            default:
                output.append(UInt8(ascii: "%"))
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    /// One name or value: `+` is a space, `%XX` a byte, anything else itself.
    static func decode(_ bytes: Substring.UTF8View.SubSequence) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                output.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"),
                      let first = bytes.index(index, offsetBy: 1, limitedBy: bytes.endIndex), first < bytes.endIndex,
                      let second = bytes.index(first, offsetBy: 1, limitedBy: bytes.endIndex), second < bytes.endIndex,
                      let high = hexValue(bytes[first]), let low = hexValue(bytes[second]) {
                output.append(high << 4 | low)
                index = second
            } else {
                output.append(byte)
            }
            index = bytes.index(after: index)
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
