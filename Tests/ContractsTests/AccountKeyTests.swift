import Contracts
import Testing

@Suite("Account keys")
struct AccountKeyTests {
    @Test func keyIsAppIdColonAccountId() throws {
        #expect(try AccountKey(appId: "app-1", accountId: "acc-1").rawValue == "app-1:acc-1")
        #expect(try AccountKey(appId: "app-1", accountId: "acc-1").description == "app-1:acc-1")
    }

    @Test func accountIdWithColonsSurvivesComposeAndParse() throws {
        let accountId = "557058:f0e1d2c3-b4a5-4697-8877-665544332211"
        let key = try AccountKey(appId: "app-1", accountId: accountId)
        #expect(key.rawValue == "app-1:557058:f0e1d2c3-b4a5-4697-8877-665544332211")
        let parsed = try AccountKey(parsing: key.rawValue)
        #expect(parsed.appId == "app-1")
        #expect(parsed.accountId == accountId)
        #expect(parsed == key)
        #expect(try AccountKey(bytes: Array(key.rawValue.utf8)) == key)
    }

    @Test func parsingSplitsAtTheFirstColon() throws {
        let key = try AccountKey(parsing: "a:b:c:")
        #expect(key.appId == "a")
        #expect(key.accountId == "b:c:")
    }

    @Test(arguments: [("", "acc"), ("app:x", "acc"), ("app", "")])
    func composingAnAmbiguousOrEmptyKeyThrows(appId: String, accountId: String) {
        #expect(throws: ContractError.self) { try AccountKey(appId: appId, accountId: accountId) }
    }

    @Test(arguments: ["", "no-colon", ":acc", "app:", ":"])
    func parsingAnInvalidKeyThrows(text: String) throws {
        let error = try #require(throws: ContractError.self) { try AccountKey(parsing: text) }
        guard case .invalidKey = error else {
            Issue.record("expected invalidKey, got \(error)")
            return
        }
    }

    @Test func invalidKeyErrorsDoNotRepeatTheKey() throws {
        let error = try #require(throws: ContractError.self) { try AccountKey(parsing: "ada@example.com") }
        #expect(!error.description.contains("ada@example.com"))
    }

    @Test func nonUTF8KeyBytesThrow() {
        #expect(throws: ContractError.invalidKey(reason: "key is not valid UTF-8")) {
            try AccountKey(bytes: [0x61, 0x3A, 0xFF])
        }
    }
}
