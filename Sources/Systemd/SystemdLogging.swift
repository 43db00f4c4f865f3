public import Logging

/// Picks the log handler for how the daemon was started: native journal entries under
/// systemd, readable lines on stderr in a terminal or container.
///
/// ```swift
/// LoggingSystem.bootstrap { label in SystemdLogging.makeHandler(label: label) }
/// ```
public enum SystemdLogging {
    /// A `JournaldLogHandler` when stderr is the journal (`JournalStream.stderrIsJournal()`),
    /// otherwise a ``StandardErrorLogHandler``.
    public static func makeHandler(
        label: String,
        syslogIdentifier: String = "chatrelayd",
        metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider
    ) -> any LogHandler {
        if JournalStream.stderrIsJournal() {
            return JournaldLogHandler(
                label: label,
                syslogIdentifier: syslogIdentifier,
                metadataProvider: metadataProvider
            )
        }
        return StandardErrorLogHandler(label: label, metadataProvider: metadataProvider)
    }
}
