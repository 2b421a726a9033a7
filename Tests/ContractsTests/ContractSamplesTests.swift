import Contracts
import Foundation
import Testing

/// Writes one body of every event type, as `EventCodec` encodes it, so that `scripts/validate-contracts` can check
/// them against `docs/schemas/*.json`: the published contract cannot drift from the code.
///
/// Two samples per type: `<EventName>.full.json` (every optional field set) and `<EventName>.minimal.json` (every
/// optional field absent; for types without optionals, other values — empty arrays, other enum cases). They go to
/// `LETHE_CONTRACT_SAMPLES_DIR` when set (`make test` sets it), else to a fresh temporary directory.
@Suite("Contract samples")
struct ContractSamplesTests {
    /// A sample: its file name and a check that it survives encode → decode.
    struct Sample {
        let fileName: String
        let eventType: String
        let body: Data
        let roundTrips: Bool
    }

    private static func sample<Event: LetheEvent>(_ event: Event, variant: String) throws -> Sample {
        let body = try EventCodec.encode(event)
        let decoded = try EventCodec.decode(Event.self, from: body)
        // `lethe.ProfileFetched` → `ProfileFetched.full.json`: the file name says which schema applies.
        let name = Event.eventType.split(separator: ".").last.map(String.init) ?? Event.eventType
        return Sample(
            fileName: "\(name).\(variant).json", eventType: Event.eventType, body: body, roundTrips: decoded == event)
    }

    static let instant = Fixtures.instant
    static let later = Fixtures.weekLater

    /// Every event type, twice. Adding an event type to `Contracts` means adding it here (the script fails when an
    /// event type has no sample).
    static func allSamples() throws -> [Sample] {
        try stateAndPDRSamples() + erasureSamples()
    }

    /// Tenants, profiles and the PDR events.
    private static func stateAndPDRSamples() throws -> [Sample] {
        [
            try sample(Fixtures.tenantConfigured, variant: "full"),
            try sample(
                TenantConfigured(tenantId: "tenant-2", erasurePolicy: .delete, apps: [], deadlineDays: 1),
                variant: "minimal"),

            try sample(Fixtures.profileFetched, variant: "full"),
            try sample(Fixtures.profileFetchedMinimal, variant: "minimal"),

            try sample(Fixtures.accountHeld, variant: "full"),
            try sample(
                AccountHeld(appId: "app-own", accountId: "acc-2", updatedAt: later, tenantIds: ["tenant-1"]),
                variant: "minimal"),

            try sample(Fixtures.accountReported, variant: "full"),
            try sample(
                AccountReported(appId: "app-own", accountId: "acc-2", reportedAt: later, nextDueAt: later),
                variant: "minimal"),

            try sample(Fixtures.accountStatusReported, variant: "full"),
            try sample(
                AccountStatusReported(
                    appId: "app-own", accountId: "acc-2", tenantIds: [], status: .updated, reportedAt: later),
                variant: "minimal"),

        ]
    }

    /// The erasure events; the executor's changelog.
    private static func erasureSamples() throws -> [Sample] {
        [
            try sample(Fixtures.erasureRequested, variant: "full"),
            try sample(Fixtures.erasureRequestedMinimal, variant: "minimal"),

            try sample(Fixtures.eraseSubject, variant: "full"),
            try sample(
                EraseSubject(
                    erasureId: "er-2", tenantId: "tenant-2", appId: "app-shared", accountId: "acc-2", policy: .delete,
                    cause: .atlassianClosed, issuedAt: instant, deadline: later),
                variant: "minimal"),

            try sample(Fixtures.erasureAcknowledged, variant: "full"),
            try sample(
                ErasureAcknowledged(erasureId: "er-2", participant: "billing", outcome: .scrubbed, at: later),
                variant: "minimal"),

            try sample(Fixtures.participantDeclared, variant: "full"),
            try sample(ParticipantDeclared(participant: "audit-only", holds: [], declaredAt: later), variant: "minimal"),

            try sample(Fixtures.erasureCompleted, variant: "full"),
            try sample(
                ErasureCompleted(
                    erasureId: "er-2", tenantId: "tenant-2", subject: "00ff", policy: .disassociate,
                    cause: .refreshFailed,
                    // A participant an operator retired while the erasure waited for it.
                    outcomes: [.init(participant: "legacy-crm", outcome: .waived, reason: "decommissioned", at: later)],
                    completedAt: later,
                    receipt: .init(sequence: 1, entryHash: "ef56", previousHash: "00", signature: "sig2", keyId: "k")),
                variant: "minimal"),

        ] + (try changelogSamples())
    }

    /// The executor's changelog: a completed erasure with every optional field, an open one with none; retirements.
    private static func changelogSamples() throws -> [Sample] {
        [
            try sample(
                ErasureState(
                    erasureId: "er-1", commandId: "er-1b", tenantId: "tenant-1", appId: "app-own", accountId: "acc-1",
                    subject: "ab12", policy: .scrub, cause: .atlassianClosed, status: "completed", overdue: true,
                    deadline: later, requests: 2, issuedAt: instant, createdAt: instant, updatedAt: later,
                    completedAt: later, version: 7,
                    participants: [.init(
                        participant: "billing", outcome: .waived, detail: "decommissioned", failedAttempts: 1, sends: 3,
                        lastSentAt: instant, ackedAt: later)],
                    audit: .init(
                        receipt: .init(
                            chain: 0, sequence: 3, entryHash: "cd34", previousHash: "ab12", signature: "sig", keyId: "k"),
                        completedAtMs: 1_700_000_000_000,
                        outcomes: [.init(participant: "billing", outcome: .waived, atMs: 1_700_000_000_000,
                                         reason: "decommissioned")])),
                variant: "full"),
            try sample(
                ErasureState(
                    erasureId: "er-2", commandId: nil, tenantId: "tenant-2", appId: "app-shared", accountId: nil,
                    subject: "00ff", policy: .delete, cause: .tenantRequest, status: "pending", overdue: false,
                    deadline: later, requests: 1, issuedAt: nil, createdAt: instant, updatedAt: instant,
                    completedAt: nil, version: 0, participants: [], audit: nil),
                variant: "minimal"),

            try sample(
                ParticipantRetired(participant: "legacy-crm", reason: "decommissioned", retiredAt: later, waived: 4,
                                   completed: 3),
                variant: "full"),
            try sample(
                ParticipantRetired(participant: "old", reason: "gone", retiredAt: instant, waived: 0, completed: 0),
                variant: "minimal"),

            // profile-store's changelog: every tenant's profile of an account, and one unlinked scrubbed profile;
            // an erasure it applied, and a suppression carried over from a file made before the changelog.
            try sample(
                ProfilesHeld(appId: "app-own", accountId: "acc-1", profiles: [
                    .init(platformUserId: "u-1", tenantId: "tenant-1", name: "Ada", email: "ada@example.com",
                          nickname: "ada", picture: "https://avatar.example/acc-1", holdsPersonalData: true,
                          fetchedAt: instant),
                ]),
                variant: "full"),
            try sample(
                ProfilesHeld(appId: "app-own", accountId: nil, profiles: [
                    .init(platformUserId: "u-2", tenantId: "tenant-2", name: nil, email: nil, nickname: nil,
                          picture: nil, holdsPersonalData: false, fetchedAt: later),
                ]),
                variant: "minimal"),
            try sample(
                ProfileErasureRecorded(
                    erasureId: "er-1", tenantId: "tenant-1", appId: "app-own", accountDigest: "ab12",
                    erasedThrough: instant, suppressed: true, outcome: .erased),
                variant: "full"),
            try sample(
                ProfileErasureRecorded(
                    erasureId: "er-0", tenantId: nil, appId: "app-own", accountDigest: "cd34", erasedThrough: nil,
                    suppressed: true, outcome: nil),
                variant: "minimal"),

            // oauth-gateway's changelog: a tenant's row, every column set (its secret as the file keeps it, hashed,
            // in base64); a row of the two-column key's table, without its nullable ones.
            try sample(
                GatewayRowChanged(table: "tenants", columns: [
                    "tenant_id": "t-1", "secret_hash": "3q2+7w==", "return_urls": "[\"https://app.example/back\"]",
                    "erasure_policy": "scrub", "deadline_days": "30", "app_id": "app-own",
                    "created_at": "1700000000.123", "updated_at": "1700000500.5", "disabled_at": "1700000600.0",
                    "allowed_scopes": "read:jira-work",
                ]),
                variant: "full"),
            try sample(
                GatewayRowChanged(table: "ssf_erasure_subjects", columns: [
                    "subject_digest": "q83vEjQ=", "user_id": "u-1", "tenant_id": "t-1", "erasure_id": "er-1",
                    "created_at": "1700000000.0",
                ]),
                variant: "minimal"),

            try sample(
                ReplicaActivated(
                    service: "erasure-executor", replica: "r-7f3a", url: "http://10.0.3.7:8080",
                    internalUrl: "http://10.0.3.7:9080", activatedAt: later, partition: 7),
                variant: "full"),
            try sample(
                ReplicaActivated(
                    service: "oauth-gateway", replica: "r-1", url: "http://127.0.0.1:8080", internalUrl: nil,
                    activatedAt: instant),
                variant: "minimal"),
        ]
    }

    /// Where to write: `LETHE_CONTRACT_SAMPLES_DIR`, or a new temporary directory.
    private static func outputDirectory() -> URL {
        if let path = ProcessInfo.processInfo.environment["LETHE_CONTRACT_SAMPLES_DIR"], !path.isEmpty {
            return URL(fileURLWithPath: path, isDirectory: true)
        }
        return FileManager.default.temporaryDirectory
            .appendingPathComponent("lethe-contract-samples-\(UUID().uuidString.lowercased())", isDirectory: true)
    }

    @Test func everyEventTypeEncodesDecodesAndIsWrittenAsASample() throws {
        let samples = try Self.allSamples()

        // Every sample survives the round trip and carries the version its type writes.
        for sample in samples {
            #expect(sample.roundTrips, "\(sample.fileName) does not survive encode → decode")
            let object = try sample.body.jsonObject()
            let written = [
                ProfileFetched.eventType: "1.1", ErasureCompleted.eventType: "1.2", ErasureState.eventType: "1.1",
                ReplicaActivated.eventType: "1.1",
            ][sample.eventType] ?? "1.0"
            #expect(object["schemaVersion"] as? String == written, "\(sample.fileName)")
        }

        // Sixteen event types, each with a full and a minimal sample, no file name twice.
        let types = Set(samples.map(\.eventType))
        #expect(types.count == 16)
        #expect(Set(samples.map(\.fileName)).count == samples.count)
        for type in types {
            #expect(samples.filter { $0.eventType == type }.count == 2, "\(type)")
        }

        let directory = Self.outputDirectory()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for sample in samples {
            try sample.body.write(to: directory.appendingPathComponent(sample.fileName), options: .atomic)
        }
        let written = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(Set(samples.map(\.fileName)).isSubset(of: Set(written)))
    }

    @Test func minimalSamplesOmitEveryOptionalField() throws {
        let samples = Dictionary(uniqueKeysWithValues: try Self.allSamples().map { ($0.fileName, $0) })
        let profile = try #require(samples["ProfileFetched.minimal.json"]).body.jsonObject()
        #expect(Set(profile.keys) == ["schemaVersion", "tenantId", "appId", "accountId", "fetchedAt"])
        let request = try #require(samples["ErasureRequested.minimal.json"]).body.jsonObject()
        #expect(Set(request.keys) == ["schemaVersion", "requestId", "appId", "accountId", "cause"])
        let ack = try #require(samples["ErasureAcknowledged.minimal.json"]).body.jsonObject()
        #expect(Set(ack.keys) == ["schemaVersion", "erasureId", "participant", "outcome", "at"])

        let fullProfile = try #require(samples["ProfileFetched.full.json"]).body.jsonObject()
        #expect(Set(fullProfile.keys).isSuperset(of: ["name", "email", "nickname", "picture"]))
        let fullRequest = try #require(samples["ErasureRequested.full.json"]).body.jsonObject()
        #expect(Set(fullRequest.keys).isSuperset(of: ["tenantId", "policy"]))
        let fullAck = try #require(samples["ErasureAcknowledged.full.json"]).body.jsonObject()
        #expect(fullAck["detail"] != nil)
    }
}
