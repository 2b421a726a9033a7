import Contracts
import Foundation

/// Millisecond-exact instants, so that encode → decode round trips compare equal.
enum Fixtures {
    /// 2024-06-01T09:30:00.123Z.
    static let instant = Date(timeIntervalSince1970: 1_717_234_200.123)
    /// 2024-06-08T09:30:00.000Z.
    static let weekLater = Date(timeIntervalSince1970: 1_717_839_000)

    static let tenantConfigured = TenantConfigured(
        tenantId: "tenant-1",
        erasurePolicy: .scrub,
        apps: [.init(appId: "app-own", shared: false), .init(appId: "app-shared", shared: true)],
        deadlineDays: 30
    )
    static let profileFetched = ProfileFetched(
        tenantId: "tenant-1",
        appId: "app-own",
        accountId: "557058:f0e1d2c3-b4a5-4697-8877-665544332211",
        userId: "8d3c2b1a-0f9e-4d8c-b7a6-958473625140",
        name: "Ada Lovelace",
        email: "ada@example.com",
        nickname: "ada",
        picture: "https://avatar.example.com/ada.png",
        fetchedAt: instant
    )
    static let profileFetchedMinimal = ProfileFetched(
        tenantId: "tenant-1", appId: "app-own", accountId: "acc-1", fetchedAt: instant
    )
    static let accountHeld = AccountHeld(
        appId: "app-shared", accountId: "acc-1", updatedAt: instant, tenantIds: ["tenant-1", "tenant-2"]
    )
    static let accountReported = AccountReported(
        appId: "app-shared", accountId: "acc-1", reportedAt: instant, nextDueAt: weekLater
    )
    static let accountStatusReported = AccountStatusReported(
        appId: "app-shared", accountId: "acc-1", tenantIds: ["tenant-1"], status: .closed, reportedAt: instant
    )
    static let erasureRequested = ErasureRequested(
        requestId: "req-1", appId: "app-own", accountId: "acc-1", tenantId: "tenant-1", cause: .refreshFailed,
        policy: .scrub
    )
    static let erasureRequestedMinimal = ErasureRequested(
        requestId: "req-2", appId: "app-own", accountId: "acc-1", cause: .atlassianClosed
    )
    static let eraseSubject = EraseSubject(
        erasureId: "er-1", tenantId: "tenant-1", appId: "app-own", accountId: "acc-1", policy: .disassociate,
        cause: .tenantRequest, issuedAt: instant, deadline: weekLater
    )
    static let erasureAcknowledged = ErasureAcknowledged(
        erasureId: "er-1", participant: "profile-store", outcome: .nothingHeld, detail: "no rows", at: instant
    )
    static let participantDeclared = ParticipantDeclared(
        participant: "profile-store", holds: ["name", "email", "nickname", "picture"], declaredAt: instant
    )
    static let erasureCompleted = ErasureCompleted(
        erasureId: "er-1",
        tenantId: "tenant-1",
        subject: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        policy: .delete,
        cause: .atlassianClosed,
        outcomes: [
            .init(participant: "profile-store", outcome: .erased, at: instant),
            .init(participant: "billing", outcome: .failed, at: weekLater),
        ],
        completedAt: weekLater,
        receipt: .init(
            chain: 7, sequence: 42, entryHash: "ab12", previousHash: "cd34", signature: "sig", keyId: "key-2024")
    )
}

extension Data {
    /// The body as a JSON object, to inspect fields the way a non-Swift consumer would.
    func jsonObject() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: self) as? [String: Any] ?? [:]
    }
}

/// Builds a body by hand, as another language's producer would.
func json(_ text: String) -> Data {
    Data(text.utf8)
}
