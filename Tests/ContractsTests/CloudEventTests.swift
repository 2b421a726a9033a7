import Contracts
import Foundation
import Testing

@Suite("CloudEvents binary-mode headers")
struct CloudEventTests {
    private let attributes = CloudEventAttributes(
        id: "6f1c1a7e-0000-4000-8000-000000000001",
        type: ErasureAcknowledged.eventType,
        source: "/lethe/profile-store",
        time: Fixtures.instant
    )

    private func dictionary(_ headers: [(name: String, value: String)]) -> [String: String] {
        Dictionary(headers.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    @Test func headersCarryEveryAttributeInBindingNames() {
        let headers = dictionary(attributes.headers)
        #expect(headers == [
            "ce_specversion": "1.0",
            "ce_id": "6f1c1a7e-0000-4000-8000-000000000001",
            "ce_type": "lethe.ErasureAcknowledged",
            "ce_source": "/lethe/profile-store",
            "ce_time": "2024-06-01T09:30:00.123Z",
            "content-type": "application/json",
        ])
        #expect(attributes.headers.count == 6)
    }

    @Test func headersRoundTrip() throws {
        #expect(try CloudEventAttributes(headers: dictionary(attributes.headers)) == attributes)
        #expect(try CloudEventAttributes(headers: attributes.headers) == attributes)
    }

    @Test(arguments: ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time"])
    func missingRequiredHeaderIsReportedByName(name: String) {
        var headers = dictionary(attributes.headers)
        headers[name] = nil
        #expect(throws: ContractError.missingHeader(name: name)) {
            try CloudEventAttributes(headers: headers)
        }
        headers[name] = ""
        #expect(throws: ContractError.missingHeader(name: name)) {
            try CloudEventAttributes(headers: headers)
        }
    }

    @Test func missingContentTypeDefaultsToJSON() throws {
        var headers = dictionary(attributes.headers)
        headers["content-type"] = nil
        #expect(try CloudEventAttributes(headers: headers).contentType == "application/json")
    }

    @Test func unusableHeadersAreInvalid() {
        var badTime = dictionary(attributes.headers)
        badTime["ce_time"] = "yesterday"
        #expect(throws: ContractError.invalidHeader(name: "ce_time", reason: "not an RFC 3339 timestamp")) {
            try CloudEventAttributes(headers: badTime)
        }
        var badVersion = dictionary(attributes.headers)
        badVersion["ce_specversion"] = "0.3"
        #expect(throws: ContractError.self) { try CloudEventAttributes(headers: badVersion) }
        var badContentType = dictionary(attributes.headers)
        badContentType["content-type"] = "application/avro"
        #expect(throws: ContractError.self) { try CloudEventAttributes(headers: badContentType) }
    }

    @Test func headerNamesMatchCaseInsensitivelyAndContentTypeMayHaveParameters() throws {
        var headers = dictionary(attributes.headers)
        headers["content-type"] = nil
        headers["Content-Type"] = "Application/JSON; charset=utf-8"
        #expect(try CloudEventAttributes(headers: headers).id == attributes.id)
    }

    @Test func attributesForAnEventUseItsTypeAndFreshIds() {
        let first = CloudEventAttributes.for(Fixtures.eraseSubject, source: "/lethe/erasure-executor")
        let second = CloudEventAttributes.for(Fixtures.eraseSubject, source: "/lethe/erasure-executor")
        #expect(first.type == "lethe.EraseSubject")
        #expect(first.specversion == "1.0")
        #expect(first.contentType == "application/json")
        #expect(first.id != second.id)
        #expect(UUID(uuidString: first.id) != nil)
        #expect(abs(first.time.timeIntervalSinceNow) < 60)

        let fixed = CloudEventAttributes.for(Fixtures.eraseSubject, source: "s", id: "id-1", time: Fixtures.instant)
        let expected = CloudEventAttributes(id: "id-1", type: "lethe.EraseSubject", source: "s", time: Fixtures.instant)
        #expect(fixed == expected)
    }

    // MARK: One-stop decoding

    @Test func recordWithMatchingHeadersDecodes() throws {
        let event = Fixtures.erasureAcknowledged
        let value = try EventCodec.encode(event)
        let headers = dictionary(CloudEventAttributes.for(event, source: "/lethe/profile-store").headers)
        #expect(try EventCodec.decode(ErasureAcknowledged.self, value: value, headers: headers) == event)
        #expect(try EventCodec.decode(ErasureAcknowledged.self, value: Array(value), headers: headers) == event)
    }

    @Test func recordWithoutTheRequiredHeadersIsRejected() throws {
        let value = try EventCodec.encode(Fixtures.erasureAcknowledged)
        #expect(throws: ContractError.missingHeader(name: "ce_specversion")) {
            try EventCodec.decode(ErasureAcknowledged.self, value: value, headers: [:])
        }
        var headers = dictionary(CloudEventAttributes.for(Fixtures.erasureAcknowledged, source: "s").headers)
        headers["ce_id"] = nil
        #expect(throws: ContractError.missingHeader(name: "ce_id")) {
            try EventCodec.decode(ErasureAcknowledged.self, value: value, headers: headers)
        }
    }

    @Test func recordOfAnotherEventTypeIsRejected() throws {
        let value = try EventCodec.encode(Fixtures.eraseSubject)
        let headers = dictionary(CloudEventAttributes.for(Fixtures.eraseSubject, source: "s").headers)
        #expect(throws: ContractError.unexpectedEventType(
            found: "lethe.EraseSubject", expected: "lethe.ErasureAcknowledged"
        )) {
            try EventCodec.decode(ErasureAcknowledged.self, value: value, headers: headers)
        }
    }

    @Test func recordWithNonJSONContentTypeIsRejected() throws {
        let value = try EventCodec.encode(Fixtures.erasureAcknowledged)
        var headers = dictionary(CloudEventAttributes.for(Fixtures.erasureAcknowledged, source: "s").headers)
        headers["content-type"] = "application/avro"
        #expect(throws: ContractError.invalidHeader(name: "content-type", reason: "expected application/json")) {
            try EventCodec.decode(ErasureAcknowledged.self, value: value, headers: headers)
        }
    }
}
