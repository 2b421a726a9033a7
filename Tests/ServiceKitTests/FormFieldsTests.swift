import Contracts
import Foundation
import Hummingbird
import HummingbirdTesting
import ServiceKit
import Testing

/// Issue 21: every query string and form body is `application/x-www-form-urlencoded` (RFC 6749 §4.1.1, Appendix B).
@Suite("Form-encoded queries")
struct FormFieldsTests {
    @Test("+ is a space, %2B a plus, %25 a percent; a bad escape stays as sent; the first of a repeated name wins")
    func decoding() {
        let fields = FormFields(decoding: "scope=read%3Ame+offline_access&state=a+b%2Bc%25d&bad=%zz%4&x=1&x=2&flag&&=v")
        #expect(fields["scope"] == "read:me offline_access")
        #expect(fields["state"] == "a b+c%d")
        #expect(fields["bad"] == "%zz%4")
        #expect(fields["x"] == "1")
        #expect(fields["flag"] == "")
        #expect(fields[""] == "v")
        #expect(fields["missing"] == nil)
        #expect(fields.pairs.count == 7)
        #expect(FormFields(decoding: "").pairs.isEmpty)
        // UTF-8 bytes decode to their characters; bytes that are not UTF-8 become U+FFFD instead of failing.
        #expect(FormFields(decoding: "n=Ad%C3%A1&b=%FF")["n"] == "Adá")
        #expect(FormFields(decoding: "b=%FF")["b"] == "\u{FFFD}")
        #expect(FormFields(decoding: "k%3Dx=y%26z")["k=x"] == "y&z")
    }

    @Test("encode leaves only unreserved characters literal, and every value reads back the same")
    func encodingRoundTrips() {
        #expect(FormFields.encode("a b+c%d/é~") == "a%20b%2Bc%25d%2F%C3%A9~")
        let values = ["a b+c%d", "read:me offline_access", "x=1&y=2", "https://tenant.example/return?x=1#f", "", "ü 😀"]
        let query = FormFields.queryString(values.enumerated().map { ("k\($0.offset)", $0.element) } + [("absent", nil)])
        let decoded = FormFields(decoding: query)
        #expect(decoded.pairs.map(\.value) == values)
        #expect(decoded["absent"] == nil)
    }

    @Test("FormFields(query:) reads a request's query through the form decoder, not Hummingbird's")
    func requestQuery() async throws {
        let router = Router()
        router.get("/echo") { request, _ -> String in
            FormFields(query: request)["scope"] ?? "<none>"
        }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/echo?scope=read:me+offline_access", method: .get) { response in
                #expect(String(buffer: response.body) == "read:me offline_access")
            }
            try await client.execute(uri: "/echo", method: .get) { response in
                #expect(String(buffer: response.body) == "<none>")
            }
        }
    }

    @Test("no service or shared module reads Hummingbird's queryParameters (it keeps + as it is)")
    func noRawQueryParameters() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        var offenders: [String] = []
        var scanned = 0
        for folder in ["Services", "Shared"] {
            let base = root.appendingPathComponent(folder)
            let files = try #require(FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil))
            for case let file as URL in files where file.pathExtension == "swift" {
                scanned += 1
                let text = try String(contentsOf: file, encoding: .utf8)
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where line.contains(".queryParameters") && !line.trimmingCharacters(in: .whitespaces).hasPrefix("//") {
                    offenders.append("\(folder)/\(file.lastPathComponent):\(number + 1)")
                }
            }
        }
        #expect(scanned > 40, "the scan must see the sources (found \(scanned) files under \(root.path))")
        #expect(offenders.isEmpty, "read queries with FormFields(query:): \(offenders)")
    }
}
