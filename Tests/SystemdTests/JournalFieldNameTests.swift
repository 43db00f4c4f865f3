import Testing

@testable import Systemd

@Suite("JournalFieldName")
struct JournalFieldNameTests {
    @Test(
        arguments: [
            ("request-id", "REQUEST_ID"),
            ("model", "MODEL"),
            ("message_id", "MESSAGE_ID"),
            ("MESSAGE_ID", "MESSAGE_ID"),
            ("http.status code", "HTTP_STATUS_CODE"),
            ("9lives", "F_9LIVES"),
            ("_trusted", "F__TRUSTED"),
            ("-leading", "F__LEADING"),
            ("naïve/key!", "NAVEKEY"),
        ]
    )
    func sanitises(key: String, expected: String) {
        #expect(JournalFieldName.sanitized(key) == expected)
    }

    @Test(arguments: ["", "ü", "!!!", "/"])
    func dropsKeysWithNoUsableCharacter(key: String) {
        #expect(JournalFieldName.sanitized(key) == nil)
    }

    @Test func cutsLongNamesToJournaldsLimit() throws {
        let name = try #require(JournalFieldName.sanitized(String(repeating: "a", count: 100)))
        #expect(name == String(repeating: "A", count: 64))
        let prefixed = try #require(JournalFieldName.sanitized("1" + String(repeating: "b", count: 100)))
        #expect(prefixed.utf8.count == 64)
        #expect(prefixed.hasPrefix("F_1B"))
    }
}
