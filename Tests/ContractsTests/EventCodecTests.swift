import Contracts
import Foundation
import Testing

@Suite("Event bodies")
struct EventCodecTests {
    private func roundTrip<Event: LetheEvent>(_ event: Event) throws -> Event {
        let data = try EventCodec.encode(event)
        return try EventCodec.decode(Event.self, from: data)
    }

    @Test func everyEventTypeSurvivesARoundTrip() throws {
        #expect(try roundTrip(Fixtures.tenantConfigured) == Fixtures.tenantConfigured)
        #expect(try roundTrip(Fixtures.profileFetched) == Fixtures.profileFetched)
        #expect(try roundTrip(Fixtures.profileFetchedMinimal) == Fixtures.profileFetchedMinimal)
        #expect(try roundTrip(Fixtures.accountHeld) == Fixtures.accountHeld)
        #expect(try roundTrip(Fixtures.accountReported) == Fixtures.accountReported)
        #expect(try roundTrip(Fixtures.accountStatusReported) == Fixtures.accountStatusReported)
        #expect(try roundTrip(Fixtures.erasureRequested) == Fixtures.erasureRequested)
        #expect(try roundTrip(Fixtures.erasureRequestedMinimal) == Fixtures.erasureRequestedMinimal)
        #expect(try roundTrip(Fixtures.eraseSubject) == Fixtures.eraseSubject)
        #expect(try roundTrip(Fixtures.erasureAcknowledged) == Fixtures.erasureAcknowledged)
        #expect(try roundTrip(Fixtures.participantDeclared) == Fixtures.participantDeclared)
        #expect(try roundTrip(Fixtures.erasureCompleted) == Fixtures.erasureCompleted)
    }

    @Test func bytesDecodeLikeData() throws {
        let bytes = Array(try EventCodec.encode(Fixtures.eraseSubject))
        #expect(try EventCodec.decode(EraseSubject.self, from: bytes) == Fixtures.eraseSubject)
    }

    @Test func bodyCarriesSchemaVersionAndCamelCaseFields() throws {
        let object = try EventCodec.encode(Fixtures.erasureCompleted).jsonObject()
        #expect(object["schemaVersion"] as? String == "1.2")
        #expect(Set(object.keys) == [
            "schemaVersion", "erasureId", "tenantId", "subject", "policy", "cause", "outcomes", "completedAt",
            "receipt",
        ])
        let receipt = try #require(object["receipt"] as? [String: Any])
        #expect(Set(receipt.keys) == ["chain", "sequence", "entryHash", "previousHash", "signature", "keyId"])
        #expect(receipt["sequence"] as? Int == 42 && receipt["chain"] as? Int == 7)
    }

    @Test func enumsUseTheirContractRawValues() throws {
        let ack = try EventCodec.encode(Fixtures.erasureAcknowledged).jsonObject()
        #expect(ack["outcome"] as? String == "nothing-held")
        let request = try EventCodec.encode(Fixtures.erasureRequested).jsonObject()
        #expect(request["cause"] as? String == "refresh-failed")
        #expect(request["policy"] as? String == "scrub")
        let command = try EventCodec.encode(Fixtures.eraseSubject).jsonObject()
        #expect(command["cause"] as? String == "tenant-request")
        #expect(command["policy"] as? String == "disassociate")
        #expect(ErasureCause.atlassianClosed.rawValue == "atlassian-closed")
        #expect(AccountStatus.allCases.map(\.rawValue) == ["closed", "updated"])
        #expect(ErasurePolicy.allCases.map(\.rawValue) == ["delete", "scrub", "disassociate"])
        #expect(ErasureOutcome.allCases.map(\.rawValue) == [
            "erased", "scrubbed", "disassociated", "nothing-held", "failed",
        ])
    }

    @Test func absentOptionalsAreOmittedFromTheBody() throws {
        let object = try EventCodec.encode(Fixtures.erasureRequestedMinimal).jsonObject()
        #expect(object["tenantId"] == nil)
        #expect(object["policy"] == nil)
    }

    @Test func eventTypesAreNamespacedAndAtMajorVersionOne() {
        let types: [any LetheEvent.Type] = [
            TenantConfigured.self, ProfileFetched.self, AccountHeld.self, AccountReported.self,
            AccountStatusReported.self, ErasureRequested.self, EraseSubject.self, ErasureAcknowledged.self,
            ParticipantDeclared.self, ErasureCompleted.self,
        ]
        #expect(types.map { $0.eventType } == [
            "lethe.TenantConfigured", "lethe.ProfileFetched", "lethe.AccountHeld", "lethe.AccountReported",
            "lethe.AccountStatusReported", "lethe.ErasureRequested", "lethe.EraseSubject",
            "lethe.ErasureAcknowledged", "lethe.ParticipantDeclared", "lethe.ErasureCompleted",
        ])
        #expect(types.allSatisfy { $0.schemaVersion.major == 1 })
        // Minor versions only add: ProfileFetched 1.1 added userId; ErasureCompleted 1.1 the outcome waived and reason,
        // 1.2 the receipt's chain.
        #expect(types.filter { $0.schemaVersion.minor > 0 }.map { $0.eventType }
                == ["lethe.ProfileFetched", "lethe.ErasureCompleted"])
        #expect(ProfileFetched.schemaVersion == SchemaVersion(major: 1, minor: 1))
        #expect(ErasureCompleted.schemaVersion == SchemaVersion(major: 1, minor: 2))
    }

    @Test func profileFetchedOneZeroWithoutUserIdStillDecodes() throws {
        let body = json(#"{"schemaVersion":"1.0","tenantId":"t","appId":"a","accountId":"x","fetchedAt":"2024-06-01T09:30:00Z"}"#)
        let event = try EventCodec.decode(ProfileFetched.self, from: body)
        #expect(event.userId == nil)
        #expect(event.accountId == "x")
    }

    @Test func bodyFromAnotherLanguageDecodes() throws {
        let body = json("""
            {"erasureId":"er-9","participant":"crm","outcome":"scrubbed","at":"2024-06-01T09:30:00Z",
             "schemaVersion":"1.0"}
            """)
        let ack = try EventCodec.decode(ErasureAcknowledged.self, from: body)
        #expect(ack.outcome == .scrubbed)
        #expect(ack.detail == nil)
        #expect(ack.at == Date(timeIntervalSince1970: 1_717_234_200))
    }

    // MARK: Schema versions

    @Test func unknownMajorVersionIsRejected() throws {
        let body = json(#"{"schemaVersion":"2.0","participant":"crm","holds":[],"declaredAt":"2024-06-01T09:30:00Z"}"#)
        #expect(throws: ContractError.unsupportedSchemaVersion(
            found: SchemaVersion(major: 2, minor: 0), supported: SchemaVersion(major: 1, minor: 0)
        )) {
            try EventCodec.decode(ParticipantDeclared.self, from: body)
        }
    }

    @Test func unknownMajorVersionIsRejectedEvenWhenTheShapeChanged() throws {
        let body = json(#"{"schemaVersion":"3.1","entirely":"different"}"#)
        #expect(throws: ContractError.unsupportedSchemaVersion(
            found: SchemaVersion(major: 3, minor: 1), supported: SchemaVersion(major: 1, minor: 0)
        )) {
            try EventCodec.decode(ParticipantDeclared.self, from: body)
        }
    }

    @Test func higherMinorVersionWithExtraFieldsIsAccepted() throws {
        let body = json("""
            {"schemaVersion":"1.7","participant":"crm","holds":["email"],"declaredAt":"2024-06-01T09:30:00Z",
             "addedInOneSeven":{"nested":true}}
            """)
        let declared = try EventCodec.decode(ParticipantDeclared.self, from: body)
        #expect(declared.participant == "crm")
        #expect(declared.holds == ["email"])
    }

    @Test func missingSchemaVersionIsRejected() throws {
        let body = json(#"{"participant":"crm","holds":[],"declaredAt":"2024-06-01T09:30:00Z"}"#)
        #expect(throws: ContractError.missingSchemaVersion) {
            try EventCodec.decode(ParticipantDeclared.self, from: body)
        }
        let nullVersion = json(
            #"{"schemaVersion":null,"participant":"crm","holds":[],"declaredAt":"2024-06-01T09:30:00Z"}"#
        )
        #expect(throws: ContractError.missingSchemaVersion) {
            try EventCodec.decode(ParticipantDeclared.self, from: nullVersion)
        }
    }

    @Test(arguments: ["1", "1.0.0", "v1.0", "1.x", "", " 1.0"])
    func schemaVersionThatIsNotMajorDotMinorIsMalformed(version: String) throws {
        let body = json(
            #"{"schemaVersion":"\#(version)","participant":"crm","holds":[],"declaredAt":"2024-06-01T09:30:00Z"}"#
        )
        let error = try #require(throws: ContractError.self) {
            try EventCodec.decode(ParticipantDeclared.self, from: body)
        }
        guard case .malformedJSON = error else {
            Issue.record("expected malformedJSON, got \(error)")
            return
        }
    }

    @Test func schemaVersionParsesAndOrders() throws {
        #expect(SchemaVersion("1.0") == SchemaVersion(major: 1, minor: 0))
        #expect(SchemaVersion("12.34")?.description == "12.34")
        #expect(SchemaVersion(major: 1, minor: 9) < SchemaVersion(major: 2, minor: 0))
        #expect(SchemaVersion(major: 1, minor: 0).canDecode(SchemaVersion(major: 1, minor: 5)))
        #expect(!SchemaVersion(major: 1, minor: 0).canDecode(SchemaVersion(major: 0, minor: 9)))
    }

    // MARK: Malformed bodies

    @Test(arguments: ["", "not json", "{\"schemaVersion\":\"1.0\"", "[1,2,3]", "null"])
    func nonObjectOrInvalidJSONIsMalformed(text: String) throws {
        let error = try #require(throws: ContractError.self) {
            try EventCodec.decode(AccountHeld.self, from: json(text))
        }
        guard case .malformedJSON = error else {
            Issue.record("expected malformedJSON, got \(error)")
            return
        }
    }

    @Test func missingFieldIsMalformedAndNamesTheField() throws {
        let body = json(#"{"schemaVersion":"1.0","appId":"a","accountId":"b","tenantIds":[]}"#)
        #expect(throws: ContractError.malformedJSON(reason: "missing field updatedAt")) {
            try EventCodec.decode(AccountHeld.self, from: body)
        }
    }

    @Test func unknownEnumValueIsMalformedAndNamesThePath() throws {
        let body = json("""
            {"schemaVersion":"1.0","erasureId":"e","tenantId":"t","subject":"s","policy":"shred",
             "cause":"tenant-request","outcomes":[],"completedAt":"2024-06-01T09:30:00Z",
             "receipt":{"sequence":1,"entryHash":"a","previousHash":"b","signature":"c","keyId":"k"}}
            """)
        #expect(throws: ContractError.malformedJSON(reason: "invalid value at policy")) {
            try EventCodec.decode(ErasureCompleted.self, from: body)
        }
    }

    @Test func wrongTypeInsideAnArrayNamesTheIndexedPath() throws {
        let body = json("""
            {"schemaVersion":"1.0","tenantId":"t","erasurePolicy":"delete","deadlineDays":30,
             "apps":[{"appId":"a","shared":true},{"appId":"b","shared":"yes"}]}
            """)
        let error = try #require(throws: ContractError.self) {
            try EventCodec.decode(TenantConfigured.self, from: body)
        }
        #expect(error.description.contains("apps[1].shared"))
    }

    @Test func errorDescriptionsNeverContainFieldValues() throws {
        let email = "ada.secret@example.com"
        let name = "Ada Secret-Lovelace"
        let bodies = [
            // Valid JSON, wrong type for a personal field.
            #"{"schemaVersion":"1.0","tenantId":"t","appId":"a","accountId":"x","name":"\#(name)","email":42,"#
                + #""fetchedAt":"2024-06-01T09:30:00Z"}"#,
            // An email where a timestamp belongs.
            #"{"schemaVersion":"1.0","tenantId":"t","appId":"a","accountId":"x","fetchedAt":"\#(email)"}"#,
            // Broken JSON right after the personal data.
            #"{"schemaVersion":"1.0","email":"\#(email)" "name":"\#(name)"}"#,
            // Missing field, personal data present.
            #"{"schemaVersion":"1.0","tenantId":"t","appId":"a","email":"\#(email)","name":"\#(name)"}"#,
            // Personal data in the schema version itself.
            #"{"schemaVersion":"\#(email)","email":"\#(email)"}"#,
        ]
        for body in bodies {
            let error = try #require(throws: ContractError.self) {
                try EventCodec.decode(ProfileFetched.self, from: json(body))
            }
            for text in [error.description, String(describing: error), String(reflecting: error)] {
                #expect(!text.contains(email))
                #expect(!text.contains("ada.secret"))
                #expect(!text.contains(name))
            }
        }
    }

    @Test func printingAProfileRedactsPersonalData() {
        let text = "\(Fixtures.profileFetched) \(String(reflecting: Fixtures.profileFetched))"
        #expect(!text.contains("ada@example.com"))
        #expect(!text.contains("Ada Lovelace"))
        #expect(!text.contains("avatar.example.com"))
        #expect(text.contains(Fixtures.profileFetched.accountId))
    }
}
