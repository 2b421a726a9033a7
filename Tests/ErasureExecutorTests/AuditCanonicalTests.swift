import Contracts
import Foundation
import Testing

@testable import erasure_executor

/// The audit's canonical bytes are written by hand (`CanonicalJSON`); the format was defined as JSONEncoder's output
/// with sorted keys and unescaped slashes, and entries written before must keep verifying. These tests hold the
/// hand-written bytes to JSONEncoder's, field by field, on values chosen to break an escaper.
@Suite("The audit's canonical encoding")
struct AuditCanonicalTests {
    /// The definition: the fields JSONEncoder encoded for `lethe-audit-v1`.
    private struct Reference: Encodable {
        var format: String
        var sequence: Int
        var erasureId: String
        var subject: String
        var tenantId: String
        var policy: ErasurePolicy
        var cause: ErasureCause
        var outcomes: [AuditEntry.Outcome]
        var completedAtMs: Int64
        var previousHash: String
    }

    private static func referenceBytes(_ entry: AuditEntry) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let reference = Reference(
            format: entry.format, sequence: entry.sequence, erasureId: entry.erasureId, subject: entry.subject,
            tenantId: entry.tenantId, policy: entry.policy, cause: entry.cause,
            outcomes: entry.outcomes.sorted { $0.participant < $1.participant }, completedAtMs: entry.completedAtMs,
            previousHash: entry.previousHash)
        return Array(try encoder.encode(reference))
    }

    /// Every control character, quotes, backslashes, slashes, DEL, non-ASCII, a BOM, U+2028 and an emoji.
    private static let awkward: [String] = {
        var controls = ""
        for byte in 0..<0x20 { controls.unicodeScalars.append(Unicode.Scalar(UInt8(byte))) }
        return [
            "", "plain-name", controls, "\"quoted\"", "back\\slash\\", "a/b//c", "\u{7f}del", "é ü ß 中文",
            "\u{feff}bom", "line\u{2028}sep\u{2029}", "😀 emoji", "}],\"x\":{", "tab\tnew\nline\r",
        ]
    }()

    @Test("entries with awkward participant names and every policy, cause and outcome encode as JSONEncoder does")
    func matchesJSONEncoder() throws {
        var checked = 0
        for (index, name) in Self.awkward.enumerated() {
            for policy in ErasurePolicy.allCases {
                for cause in ErasureCause.allCases {
                    // Every outcome, `waived` with its reason (the awkward string itself).
                    let outcomes = CompletedOutcome.allCases.enumerated().map { offset, outcome in
                        AuditEntry.Outcome(
                            participant: offset == 0 ? name : "\(name)-\(offset)", outcome: outcome,
                            atMs: 1_790_000_000_000 + Int64(offset) * 7 - Int64(index),
                            reason: outcome == .waived ? name : nil)
                    }
                    let entry = AuditEntry(
                        sequence: index * 1000 + checked, erasureId: "0193a2b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b",
                        subject: String(repeating: "ab", count: 32), tenantId: name.isEmpty ? "tenant-a" : name,
                        policy: policy, cause: cause, outcomes: outcomes.reversed(), completedAtMs: -5 + Int64(index),
                        previousHash: AuditEntry.genesisHash)
                    #expect(entry.canonicalBytes == (try Self.referenceBytes(entry)), "participant #\(index)")
                    checked += 1
                }
            }
        }
        #expect(checked == Self.awkward.count * ErasurePolicy.allCases.count * ErasureCause.allCases.count)
    }

    @Test("the stored outcomes column is JSONEncoder's encoding of the outcomes, and decodes back to them")
    func outcomesColumn() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for name in Self.awkward {
            let outcomes = [
                AuditEntry.Outcome(participant: name, outcome: .erased, atMs: 0),
                AuditEntry.Outcome(participant: "z\(name)", outcome: .failed, atMs: Int64.max),
                AuditEntry.Outcome(participant: "a", outcome: .disassociated, atMs: Int64.min),
                AuditEntry.Outcome(participant: "retired", outcome: .waived, atMs: 1, reason: name),
            ]
            let column = CanonicalJSON.outcomes(outcomes)
            #expect(column == String(decoding: try encoder.encode(outcomes), as: UTF8.self))
            #expect(try JSONDecoder().decode([AuditEntry.Outcome].self, from: Data(column.utf8)) == outcomes)
        }
    }

    @Test("an entry without waivers hashes exactly as lethe-audit-v1 did before waivers existed")
    func entriesWithoutWaiversKeepTheirHash() throws {
        // Bytes and hash of an entry written before `reason` existed (computed by the code of that time).
        let entry = AuditEntry(
            sequence: 7, erasureId: "0193a2b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b", subject: String(repeating: "ab", count: 32),
            tenantId: "tenant-a", policy: .scrub, cause: .refreshFailed,
            outcomes: [
                AuditEntry.Outcome(participant: "profile-store", outcome: .scrubbed, atMs: 1_790_000_000_123),
                AuditEntry.Outcome(participant: "billing", outcome: .nothingHeld, atMs: 1_790_000_000_456),
            ], completedAtMs: 1_790_000_000_456, previousHash: AuditEntry.genesisHash)
        let expected = #"{"cause":"refresh-failed","completedAtMs":1790000000456,"#
            + #""erasureId":"0193a2b4-1c2d-7e3f-8a9b-0c1d2e3f4a5b","format":"lethe-audit-v1","outcomes":["#
            + #"{"atMs":1790000000456,"outcome":"nothing-held","participant":"billing"},"#
            + #"{"atMs":1790000000123,"outcome":"scrubbed","participant":"profile-store"}],"policy":"scrub","#
            + #""previousHash":"0000000000000000000000000000000000000000000000000000000000000000","sequence":7,"#
            + #""subject":"abababababababababababababababababababababababababababababababab","tenantId":"tenant-a"}"#
        #expect(String(decoding: entry.canonicalBytes, as: UTF8.self) == expected)
    }

    @Test("an empty outcome list and the genesis entry encode as JSONEncoder does")
    func edgeCases() throws {
        let entry = AuditEntry(
            sequence: 1, erasureId: "", subject: "", tenantId: "", policy: .delete, cause: .atlassianClosed,
            outcomes: [], completedAtMs: 0, previousHash: AuditEntry.genesisHash)
        #expect(entry.canonicalBytes == (try Self.referenceBytes(entry)))
        #expect(CanonicalJSON.outcomes([]) == "[]")
    }
}
