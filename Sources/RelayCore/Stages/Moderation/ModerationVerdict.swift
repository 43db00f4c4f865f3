/// What moderation does with text that a rule or a hook objects to.
public enum ModerationAction: String, Sendable, CaseIterable, Comparable {
    /// Nothing: the text goes on unchanged.
    case pass
    /// The text goes on unchanged and the verdict is recorded.
    case flag
    /// The text is replaced (by the rule's replacement or the stage's mask) before it goes on.
    case redact
    /// The request is refused, or the stream ends with `finish_reason: "content_filter"`.
    case block

    private var severity: Int {
        switch self {
        case .pass: 0
        case .flag: 1
        case .redact: 2
        case .block: 3
        }
    }

    public static func < (lhs: ModerationAction, rhs: ModerationAction) -> Bool { lhs.severity < rhs.severity }
}

/// One moderation decision other than a plain pass, as the usage record, the ledger and the
/// journal keep it.
///
/// It names the rule, what was done and where, never the offending text unless the
/// operator asked for it (`log_text: true`).
public struct ModerationVerdict: Sendable, Equatable {
    /// The rule's name, or for an external hook the category or rule it named (else the hook's name).
    public var rule: String
    public var action: ModerationAction
    /// Where the text was: `input.messages[2]`, `output.content`, `output.reasoning`,
    /// `output.refusal` or `output.tool_arguments`.
    public var location: String
    /// The hook that decided: a `patterns` hook's name, or an external hook's.
    public var hook: String
    /// Why an external hook gave no answer (`timeout`, `crashed`, `unreachable`, `bad answer`);
    /// the action is then what `on_failure` says (`pass` when open, `block` when closed).
    public var failure: String?
    /// The text concerned, only with `log_text: true`.
    public var text: String?

    public init(rule: String, action: ModerationAction, location: String, hook: String, failure: String? = nil, text: String? = nil) {
        self.rule = rule
        self.action = action
        self.location = location
        self.hook = hook
        self.failure = failure
        self.text = text
    }

    /// One line for the journal: `block no-codename in output.content (patterns)`.
    public var summary: String {
        var line = "\(self.action.rawValue) \(self.rule) in \(self.location) (\(self.hook)"
        if let failure = self.failure { line += ", \(failure)" }
        return line + ")"
    }

    /// The verdict as the usage ledger writes it.
    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "rule": .string(self.rule),
            "action": .string(self.action.rawValue),
            "where": .string(self.location),
            "hook": .string(self.hook),
        ]
        if let failure = self.failure { object["failure"] = .string(failure) }
        if let text = self.text { object["text"] = .string(text) }
        return .object(object)
    }
}
