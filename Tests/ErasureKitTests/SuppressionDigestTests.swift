import ErasureKit
import Testing

@Suite("SuppressionDigest: the documented form, the same in every language")
struct SuppressionDigestTests {
    @Test("sha256: and the hex SHA-256 of lethe.suppression.v1:<accountId> — the vector the Python participant checks too")
    func documentedVector() {
        #expect(SuppressionDigest.of(accountId: "557058:0f4e6a52-2c1b-4d7e-9a31-5be0c2d8e001")
            == "sha256:c87ac7b8f00b61b235470fbcce2d26d8ae80192093170f01aac1cec10806d486")
    }

    @Test("distinct accounts, distinct digests; the accountId does not appear in its digest")
    func distinctAndOpaque() {
        let first = SuppressionDigest.of(accountId: "5b10ac8d82e05b22cc7d4ef5")
        let second = SuppressionDigest.of(accountId: "5b10ac8d82e05b22cc7d4ef6")
        #expect(first != second && first.count == 71 && !first.contains("5b10ac8d82e05b22cc7d4ef5"))
        #expect(first == SuppressionDigest.of(accountId: "5b10ac8d82e05b22cc7d4ef5"))
    }
}
