import Logging

/// Writes moderation verdicts into the request's usage record and the journal.
///
/// The record keeps at most ``limit`` verdicts per request, so a `flag` rule that matches
/// every other word of a long answer cannot grow it without bound; the journal line for
/// each verdict still goes out.
struct ModerationRecorder: Sendable {
    static let limit = 100

    let record: RequestRecord
    let logger: Logger

    func note(_ verdicts: [ModerationVerdict]) {
        guard !verdicts.isEmpty else { return }
        self.record.update { record in
            for verdict in verdicts where record.moderation.count < Self.limit { record.moderation.append(verdict) }
        }
        for verdict in verdicts {
            var metadata: Logger.Metadata = [
                "moderation_rule": .string(verdict.rule),
                "moderation_action": .string(verdict.action.rawValue),
                "moderation_where": .string(verdict.location),
                "moderation_hook": .string(verdict.hook),
            ]
            if let failure = verdict.failure { metadata["moderation_failure"] = .string(failure) }
            if let text = verdict.text { metadata["moderation_text"] = .string(text) }
            let level: Logger.Level = verdict.action == .block || verdict.failure != nil ? .warning : .notice
            self.logger.log(level: level, "moderation: \(verdict.summary)", metadata: metadata)
        }
    }
}
