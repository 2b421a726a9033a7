import Foundation
import Hummingbird

/// Opaque cursors for paged HTTP lists: base64url of a one-letter kind and a row id, so a cursor of one list is
/// refused by another, and the form can change without breaking clients (they only echo it back).
package struct PageCursor: Sendable {
    /// Distinguishes the lists: `r` for profiles, `e` for erasures, …
    package let kind: Character

    package init(kind: Character) { self.kind = kind }

    /// The cursor that resumes after `row`.
    package func make(after row: Int64) -> String {
        make(afterKey: "\(row)")
    }

    /// The row to resume after: 0 without a cursor; 400 for one this list did not issue.
    package func parse(_ raw: String?) throws -> Int64 {
        guard let key = try parseKey(raw) else { return 0 }
        guard let row = Int64(key), row >= 0 else { throw Self.notIssued }
        return row
    }

    /// The cursor that resumes after `key`, for a list ordered by something else than a row (the list checks what it
    /// gets back with ``parseKey(_:)``).
    package func make(afterKey key: String) -> String {
        Data("\(kind)\(key)".utf8).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// The key to resume after: nil without a cursor; 400 for one that no list of this kind issued.
    package func parseKey(_ raw: String?) throws -> String? {
        guard let raw else { return nil }
        var base64 = raw.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8),
              text.first == kind
        else { throw Self.notIssued }
        return String(text.dropFirst())
    }

    private static var notIssued: HTTPError { HTTPError(.badRequest, message: "cursor is not one this API issued") }

    /// `limit` from a query: `defaultLimit` when absent, 400 outside 1…`maximum`.
    package static func parseLimit(_ raw: String?, default defaultLimit: Int, maximum: Int) throws -> Int {
        guard let raw else { return defaultLimit }
        guard let limit = Int(raw), (1...maximum).contains(limit) else {
            throw HTTPError(.badRequest, message: "limit must be an integer from 1 to \(maximum)")
        }
        return limit
    }
}
