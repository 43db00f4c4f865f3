import Logging
import Testing

@testable import Systemd

/// The entry the handler builds, checked field by field without a journald (the real
/// round trip is `JournaldRoundTripTests`).
@Suite("JournaldLogHandler entries")
struct JournaldLogHandlerTests {
    private struct ProbeError: Error, CustomStringConvertible {
        var description: String { "upstream closed" }
    }

    private func event(
        level: Logger.Level = .info,
        message: Logger.Message = "hello",
        metadata: Logger.Metadata? = nil,
        error: (any Error)? = nil
    ) -> LogEvent {
        LogEvent(
            level: level, message: message, error: error, metadata: metadata, source: "Tests",
            file: "Tests/File.swift", function: "run()", line: 12
        )
    }

    /// Fields as a name → values map (a name may repeat in the journal).
    private func fields(_ entry: JournalEntry) -> [String: [String]] {
        var result: [String: [String]] = [:]
        for field in entry.fields {
            let parts = field.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            result[String(parts[0]), default: []].append(String(parts[1]))
        }
        return result
    }

    @Test func fixedFieldsComeFirstInAKnownOrder() {
        let handler = JournaldLogHandler(label: "gateway.http", metadataProvider: nil)
        let entry = handler.entry(for: self.event(level: .notice, message: "line one\nline two"))
        #expect(
            entry.fields == [
                "MESSAGE=line one\nline two", "PRIORITY=5", "SYSLOG_IDENTIFIER=chatrelayd",
                "CODE_FILE=Tests/File.swift", "CODE_LINE=12", "CODE_FUNC=run()", "LOGGER_LABEL=gateway.http",
            ]
        )
    }

    @Test(
        arguments: [
            (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
        ]
    )
    func mapsLevelsToSyslogPriorities(level: Logger.Level, priority: Int) {
        #expect(JournaldLogHandler.syslogPriority(level) == priority)
        let entry = JournaldLogHandler(label: "l", metadataProvider: nil).entry(for: self.event(level: level))
        #expect(self.fields(entry)["PRIORITY"] == [String(priority)])
    }

    @Test func mergesHandlerThenProviderThenCallMetadata() {
        var handler = JournaldLogHandler(
            label: "l",
            syslogIdentifier: "relay-test",
            metadataProvider: Logger.MetadataProvider { ["source-of": "provider", "trace-id": "t1"] }
        )
        handler[metadataKey: "source-of"] = "handler"
        handler[metadataKey: "model"] = "gpt-x"
        let entry = handler.entry(for: self.event(metadata: ["trace-id": "t2", "request-id": "r9"]))
        let fields = self.fields(entry)
        #expect(fields["SYSLOG_IDENTIFIER"] == ["relay-test"])
        #expect(fields["SOURCE_OF"] == ["provider"])
        #expect(fields["TRACE_ID"] == ["t2"])
        #expect(fields["REQUEST_ID"] == ["r9"])
        #expect(fields["MODEL"] == ["gpt-x"])
    }

    @Test func metadataCannotOverrideTheHandlersOwnFields() {
        let handler = JournaldLogHandler(label: "l", metadataProvider: nil)
        let entry = handler.entry(for: self.event(metadata: ["message": "fake", "priority": "0", "code.line": "1"]))
        let fields = self.fields(entry)
        #expect(fields["MESSAGE"] == ["hello"])
        #expect(fields["PRIORITY"] == ["6"])
        #expect(fields["CODE_LINE"] == ["12"])
        #expect(fields["F_MESSAGE"] == ["fake"])
        #expect(fields["F_PRIORITY"] == ["0"])
        #expect(fields["F_CODE_LINE"] == ["1"])
    }

    @Test func messageIDIsNormalisedToThirtyTwoHexDigits() {
        let handler = JournaldLogHandler(label: "l", metadataProvider: nil)
        let uuidEvent = self.event(metadata: ["message_id": "550E8400-E29B-41D4-A716-446655440000"])
        let uuid = self.fields(handler.entry(for: uuidEvent))
        #expect(uuid["MESSAGE_ID"] == ["550e8400e29b41d4a716446655440000"])
        let other = self.fields(handler.entry(for: self.event(metadata: ["MESSAGE_ID": "not-an-id"])))
        #expect(other["MESSAGE_ID"] == ["not-an-id"])
    }

    @Test func nestedValuesAndErrorsBecomeText() {
        let handler = JournaldLogHandler(label: "l", metadataProvider: nil)
        let entry = handler.entry(
            for: self.event(metadata: ["tags": ["a", "b"], "ü": "dropped", "multi": "x\ny"], error: ProbeError())
        )
        let fields = self.fields(entry)
        #expect(fields["TAGS"] == [Logger.MetadataValue.array(["a", "b"]).description])
        #expect(fields["MULTI"] == ["x\ny"])
        #expect(fields["ERROR_MESSAGE"] == ["upstream closed"])
        #expect(fields["ERROR_TYPE"]?.first?.hasSuffix("ProbeError") == true)
        #expect(entry.fields.count == 7 + 4)
    }
}
