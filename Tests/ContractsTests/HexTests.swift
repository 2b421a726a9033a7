import Testing

@testable import Contracts

@Suite("Hex")
struct HexTests {
    @Test("lower-case hex of bytes, and back from either case; odd lengths and other characters are refused")
    func roundTrip() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xab, 0xff, 0x10]
        #expect(bytes.hex == "000fabff10")
        #expect([UInt8](hex: "000fabff10") == bytes)
        #expect([UInt8](hex: "000FABFF10") == bytes)
        #expect([UInt8](hex: "") == [])
        #expect([UInt8](hex: "abc") == nil)
        #expect([UInt8](hex: "zz") == nil)
        #expect([UInt8](hex: "0g") == nil)
    }
}
