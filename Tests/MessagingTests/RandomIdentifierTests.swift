import Foundation
import Messaging
import Testing

@Suite("Random identifiers for record ids")
struct RandomIdentifierTests {
    @Test("ids are lowercase version 4 UUIDs, and 20,000 of them (several refills of the pool) are all distinct")
    func versionFourAndDistinct() {
        var seen = Set<String>()
        for _ in 0..<20_000 {
            let id = RandomIdentifier.uuidString()
            seen.insert(id)
            let uuid = UUID(uuidString: id)
            #expect(uuid != nil, "\(id) is not a UUID")
            #expect(id == uuid?.uuidString.lowercased())
            let bytes = uuid.map { withUnsafeBytes(of: $0.uuid) { Array($0) } } ?? []
            #expect(bytes.count == 16 && bytes[6] >> 4 == 4, "version of \(id)")
            #expect(bytes.count == 16 && bytes[8] >> 6 == 0b10, "variant of \(id)")
        }
        #expect(seen.count == 20_000)
    }
}
