import Testing

@testable import RelayGateway

@Suite("Request ids")
struct RequestIDTests {
    @Test("unique within the process, from many threads, and not in counting order")
    func uniqueAndUnordered() async {
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 {
                group.addTask { (0..<5_000).map { _ in ChatExchange.makeRequestID() } }
            }
            return await group.reduce(into: []) { $0 += $1 }
        }
        #expect(ids.count == 20_000)
        #expect(Set(ids).count == ids.count)
        #expect(ids.allSatisfy { $0.hasPrefix("req_") && $0.count > 8 && $0.dropFirst(4).allSatisfy(\.isHexDigit) })
        // Two ids made one after the other share no long common prefix: the counter is mixed.
        let first = ChatExchange.makeRequestID(), second = ChatExchange.makeRequestID()
        let shared = zip(first, second).prefix { $0 == $1 }.count
        #expect(shared < 10, "\(first) \(second)")
    }

    static let digitCases: [(UInt64, UInt64)] = [
        (0, 0), (1, 0xF), (0xA, 0x10), (0x0FFF_FFFF_FFFF_FFFF, 0xFFFF), (UInt64.max, 0x1234), (0x8000_0000_0000_0000, 0x100),
    ]

    @Test("written as String(_:radix: 16) writes it", arguments: Self.digitCases)
    func digits(mixed: UInt64, suffix: UInt64) {
        #expect(ChatExchange.requestID(mixed, suffix: suffix) == "req_" + String(mixed, radix: 16) + String(suffix, radix: 16))
    }
}
