import Logging
import Systemd

/// Writes one entry through `JournaldLogHandler` with a known location and metadata, which
/// the journald test reads back with `journalctl -o json`.
enum JournalProbe {
    static let messageID = "550e8400-e29b-41d4-a716-446655440000"

    static func run(token: String) {
        LoggingSystem.bootstrap(
            { label, provider in
                JournaldLogHandler(label: label, syslogIdentifier: "systemd-probe", metadataProvider: provider)
            },
            metadataProvider: Logger.MetadataProvider { ["provided-by": "provider"] }
        )
        var logger = Logger(label: "probe.journal")
        logger[metadataKey: "model"] = "gpt-probe"
        logger.log(
            level: .warning,
            "probe \(token)\nsecond line",
            metadata: [
                "request-id": "\(token)",
                "message_id": "\(messageID)",
                "multi.line": "first\nsecond",
                "9lives": "cat",
                "nested": ["inner": "value"],
                "message": "shadowed",
            ],
            file: "Probe/Journal.swift",
            function: "emitProbeEntry(token:)",
            line: 4242
        )
    }
}
