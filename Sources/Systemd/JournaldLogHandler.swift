public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A swift-log `LogHandler` that writes native journal entries (`sd_journal_sendv(3)`), so
/// metadata arrives as fields `journalctl` can filter on (`journalctl REQUEST_ID=…`) instead
/// of text inside the message, and multi-line messages stay one entry.
///
/// Each entry carries `MESSAGE`, `PRIORITY` (syslog levels: trace and debug 7, info 6,
/// notice 5, warning 4, error 3, critical 2), `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`,
/// `CODE_FUNC`, `LOGGER_LABEL`, and one field per metadata entry. Metadata is merged the way
/// `StreamLogHandler` merges it: the handler's own, then the metadata provider's, then the
/// call's, later ones winning; an attached error adds `error.message` and `error.type`.
///
/// Metadata keys are renamed by `JournalFieldName`'s rule (`request-id` → `REQUEST_ID`);
/// a key that would collide with a field the handler writes itself gets the prefix `F_`
/// (`message` → `F_MESSAGE`), and a key with no usable character is dropped. `message_id`
/// becomes `MESSAGE_ID`, journald's 128-bit catalog id: a UUID with dashes is sent as the
/// 32 lowercase hex digits journald expects. Nested values are sent as their description.
///
/// If journald cannot be reached the entry is written to stderr as one line instead.
public struct JournaldLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    /// The logger's label, sent as `LOGGER_LABEL`.
    public let label: String
    /// Sent as `SYSLOG_IDENTIFIER`, the name `journalctl -t` and the default output show.
    public let syslogIdentifier: String

    /// Field names the handler fills itself, which metadata may not override.
    static let ownFieldNames: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER_LABEL",
    ]

    public init(
        label: String,
        syslogIdentifier: String = "chatrelayd",
        metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider
    ) {
        self.label = label
        self.syslogIdentifier = syslogIdentifier
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let entry = self.entry(for: event)
        if entry.send() < 0 {
            StandardErrorLogHandler.emit("\(self.syslogIdentifier) \(event.level) \(self.label): \(event.message)\n")
        }
    }

    func entry(for event: LogEvent) -> JournalEntry {
        var entry = JournalEntry()
        entry.append("MESSAGE", event.message.description)
        entry.append("PRIORITY", String(Self.syslogPriority(event.level)))
        entry.append("SYSLOG_IDENTIFIER", self.syslogIdentifier)
        entry.append("CODE_FILE", event.file)
        entry.append("CODE_LINE", String(event.line))
        entry.append("CODE_FUNC", event.function)
        entry.append("LOGGER_LABEL", self.label)
        let merged = Logger.Metadata.merged(self.metadata, provider: self.metadataProvider, event: event)
        for index in merged.order {
            guard var name = JournalFieldName.sanitized(merged.keys[index]) else { continue }
            if Self.ownFieldNames.contains(name) {
                name = "F_" + name
            }
            let text = merged.values[index].description
            entry.append(name, name == "MESSAGE_ID" ? Self.messageID(text) : text)
        }
        return entry
    }

    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// journald and its message catalog expect 32 lowercase hex digits; a UUID written with
    /// dashes is accepted and normalised, anything else is passed through untouched.
    static func messageID(_ value: String) -> String {
        let digits = value.lowercased().filter { $0 != "-" }
        guard digits.utf8.count == 32, digits.allSatisfy(\.isHexDigit) else { return value }
        return digits
    }

}
