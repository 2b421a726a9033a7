import Contracts
import Foundation
import Testing

@Suite("RFC 3339 timestamps")
struct TimestampTests {
    @Test func datesAreWrittenAsUTCWithMilliseconds() throws {
        #expect(RFC3339.string(from: Fixtures.instant) == "2024-06-01T09:30:00.123Z")
        #expect(RFC3339.string(from: Fixtures.weekLater) == "2024-06-08T09:30:00.000Z")
        #expect(RFC3339.string(from: Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.string(from: Date(timeIntervalSince1970: -0.001)) == "1969-12-31T23:59:59.999Z")
        #expect(RFC3339.string(from: Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00.000Z")

        let object = try EventCodec.encode(Fixtures.accountReported).jsonObject()
        #expect(object["reportedAt"] as? String == "2024-06-01T09:30:00.123Z")
        #expect(object["nextDueAt"] as? String == "2024-06-08T09:30:00.000Z")
    }

    @Test func subMillisecondPrecisionRoundsToTheNearestMillisecond() {
        #expect(RFC3339.string(from: Date(timeIntervalSince1970: 1_717_234_200.1236)) == "2024-06-01T09:30:00.124Z")
        #expect(RFC3339.string(from: Date(timeIntervalSince1970: 1_717_234_259.9996)) == "2024-06-01T09:31:00.000Z")
    }

    @Test(arguments: [
        ("2024-06-01T09:30:00Z", 1_717_234_200.0),
        ("2024-06-01T09:30:00.123Z", 1_717_234_200.123),
        ("2024-06-01T09:30:00.1Z", 1_717_234_200.1),
        ("2024-06-01T11:30:00+02:00", 1_717_234_200.0),
        ("2024-06-01T04:00:00.123-05:30", 1_717_234_200.123),
        ("2024-06-01T09:30:00+00:00", 1_717_234_200.0),
        ("2024-06-01t09:30:00z", 1_717_234_200.0),
        ("2024-06-01 09:30:00Z", 1_717_234_200.0),
        ("2024-06-01T09:30:00.123456789Z", 1_717_234_200.123456789),
        ("2024-05-31T23:30:00-10:00", 1_717_234_200.0),
    ])
    func timestampsParseWithOrWithoutFractionAndWithAnyOffset(text: String, epochSeconds: Double) throws {
        let date = try #require(RFC3339.date(from: text))
        #expect(abs(date.timeIntervalSince1970 - epochSeconds) < 0.000_001)
    }

    @Test func millisecondTimestampsParseToTheExactDate() {
        #expect(RFC3339.date(from: "2024-06-01T09:30:00.123Z") == Fixtures.instant)
        #expect(RFC3339.date(from: "2024-06-01T11:30:00.123+02:00") == Fixtures.instant)
    }

    @Test(arguments: [
        "", "2024-06-01", "2024-06-01T09:30:00", "2024-06-01T09:30Z", "2024-13-01T09:30:00Z",
        "2024-02-30T09:30:00Z", "2023-02-29T00:00:00Z", "2024-06-01T24:00:00Z", "2024-06-01T09:30:00.Z",
        "2024-06-01T09:30:00+0200", "2024-06-01T09:30:00Z trailing", "24-06-01T09:30:00Z", "1717234200",
    ])
    func nonRFC3339TextIsRejected(text: String) {
        #expect(RFC3339.date(from: text) == nil)
    }

    @Test func eventBodiesAcceptTimestampsWithoutFractionAndWithOffsets() throws {
        let body = json("""
            {"schemaVersion":"1.0","appId":"a","accountId":"b",
             "reportedAt":"2024-06-01T11:30:00+02:00","nextDueAt":"2024-06-08T09:30:00Z"}
            """)
        let reported = try EventCodec.decode(AccountReported.self, from: body)
        #expect(reported.reportedAt == Date(timeIntervalSince1970: 1_717_234_200))
        #expect(reported.nextDueAt == Fixtures.weekLater)
    }

    @Test func eventBodyWithANonRFC3339DateIsMalformed() {
        let body = json("""
            {"schemaVersion":"1.0","appId":"a","accountId":"b","reportedAt":1717234200,
             "nextDueAt":"2024-06-08T09:30:00Z"}
            """)
        #expect(throws: ContractError.self) {
            try EventCodec.decode(AccountReported.self, from: body)
        }
        let textual = json("""
            {"schemaVersion":"1.0","appId":"a","accountId":"b","reportedAt":"June 1st",
             "nextDueAt":"2024-06-08T09:30:00Z"}
            """)
        #expect(throws: ContractError.malformedJSON(reason: "invalid value at reportedAt")) {
            try EventCodec.decode(AccountReported.self, from: textual)
        }
    }
}
