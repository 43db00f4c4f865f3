import Foundation

/// The `moderation` stage's options as read from the config, checked.
///
/// ```yaml
/// - stage: moderation
///   hold_back: 200              # characters a checked field may hold back
///   mask: "[redacted]"
///   log_text: false             # put the offending text in the record and the journal
///   input: {roles: [user]}
///   output: {content: true, reasoning: false, tool_arguments: false}
///   hooks:
///     - kind: patterns
///       rules:
///         - {name: codename, literal: "project nightingale", action: block}
///         - {name: card, regex: '\b\d{4}(?:[ -]?\d{4}){3}\b', action: redact, check: [output]}
///       file: moderation-rules.yaml   # more rules; read again on every reload
///     - kind: command
///       command: [/usr/bin/python3, /etc/chatrelayd/hook.py]
///       timeout: 500ms
///       on_failure: open
/// ```
struct ModerationSettings {
    var holdBack = ModerationStage.defaultHoldBack
    var mask = ModerationStage.defaultMask
    var logText = false
    var inputRoles: Set<String> = ["user"]
    var outputFields = ModerationOutputFields()
    var rules: [PatternRule] = []
    var hooks: [(settings: ExternalHookSettings, hook: any ModerationHook)] = []

    static let stage = "moderation"

    init(options: [String: JSONValue], hookKinds: ModerationHookKinds) throws {
        var reader = StageOptions(options, stage: Self.stage)
        self.holdBack = try reader.integer("hold_back", default: ModerationStage.defaultHoldBack, in: 1...1_000_000)
        self.mask = try reader.string("mask", default: ModerationStage.defaultMask) ?? ModerationStage.defaultMask
        self.logText = try reader.bool("log_text", default: false)
        if let value = reader.take("input") {
            var input = try Self.section(value, "input", reader: reader)
            if let roles = input.take("roles") {
                guard let names = roles.arrayValue?.compactMap(\.stringValue), names.count == roles.arrayValue?.count else {
                    throw input.error("roles", "must be a list of role names, such as [user, system, tool]")
                }
                self.inputRoles = Set(names)
            }
            try input.finish()
        }
        if let value = reader.take("output") {
            var output = try Self.section(value, "output", reader: reader)
            self.outputFields = ModerationOutputFields(
                content: try output.bool("content", default: true),
                reasoning: try output.bool("reasoning", default: false),
                toolArguments: try output.bool("tool_arguments", default: false)
            )
            try output.finish()
        }
        guard let hooks = reader.take("hooks")?.arrayValue, !hooks.isEmpty else {
            throw reader.error("hooks", "list at least one hook (kind: patterns, or \(hookKinds.names.dropFirst().joined(separator: ", ")))")
        }
        try reader.finish()
        var names = Set<String>()
        for (index, entry) in hooks.enumerated() {
            guard case .object(var members) = entry, let kind = members.removeValue(forKey: "kind")?.stringValue else {
                throw StageConfigurationError("stage 'moderation': hooks[\(index)]: an entry is a mapping with 'kind: \(hookKinds.names.joined(separator: " | "))'")
            }
            let place = "\(Self.stage) hooks[\(index)] (\(kind))"
            var hook = StageOptions(members, stage: place)
            let name = try hook.string("name", default: kind) ?? kind
            guard names.insert(name).inserted else {
                throw StageConfigurationError("stage '\(place)': the hook name '\(name)' is used twice (give each hook a 'name')")
            }
            if kind == "patterns" {
                self.rules += try Self.patternRules(&hook, hookName: name, place: place, hookKinds: hookKinds)
                try hook.finish()
                continue
            }
            guard let factory = hookKinds.factories[kind] else {
                throw StageConfigurationError("stage 'moderation': hooks[\(index)]: unknown kind '\(kind)' (known: \(hookKinds.names.joined(separator: ", ")))")
            }
            let timeout = try hook.duration("timeout", default: .seconds(1))
            guard timeout > .zero else { throw hook.error("timeout", "must be longer than zero") }
            let failure = try hook.choice("on_failure", of: ["open", "closed"], default: "closed")
            let flagged = try hook.choice("flagged_action", of: ["flag", "redact", "block"], default: "block")
            let directions = try ModerationDirections(config: hook.take("check"), place: "stage '\(place)'")
            let settings = ExternalHookSettings(
                name: name, timeout: timeout, failClosed: failure == "closed", checksInput: directions.input, checksOutput: directions.output,
                flaggedAction: ModerationAction(rawValue: flagged)!
            )
            let made: any ModerationHook
            do {
                made = try factory(&hook, settings)
            } catch let error as StageConfigurationError {
                throw error
            } catch {
                throw StageConfigurationError("stage '\(place)': \(error)")
            }
            try hook.finish()
            self.hooks.append((settings, made))
        }
        if let longest = self.rules.max(by: { ($0.literalLength ?? 0) < ($1.literalLength ?? 0) }), let length = longest.literalLength,
            length > self.holdBack
        {
            throw StageConfigurationError(
                "stage 'moderation': rule '\(longest.name)' is \(length) characters long, more than hold_back (\(self.holdBack)); raise hold_back"
            )
        }
    }

    /// A nested mapping of options (`input:`, `output:`).
    private static func section(_ value: JSONValue, _ key: String, reader: StageOptions) throws -> StageOptions {
        guard case .object(let members) = value else { throw reader.error(key, "must be a mapping") }
        return StageOptions(members, stage: "\(Self.stage) \(key)")
    }

    /// The rules of one `patterns` entry: `rules:` first, then those of `file:`.
    private static func patternRules(_ hook: inout StageOptions, hookName: String, place: String, hookKinds: ModerationHookKinds) throws -> [PatternRule] {
        var entries: [(JSONValue, String)] = []
        if let value = hook.take("rules") {
            guard let list = value.arrayValue else { throw hook.error("rules", "must be a list of rules") }
            entries += list.enumerated().map { ($1, "stage '\(place)': rules[\($0)]") }
        }
        if let value = hook.take("file") {
            guard let path = value.stringValue else { throw hook.error("file", "must be a path") }
            let document: JSONValue
            do {
                document = try hookKinds.readRulesFile(path)
            } catch let error as CocoaError {
                throw hook.error("file", "cannot read \(path): \(error.localizedDescription)")
            } catch {
                throw hook.error("file", "cannot read \(path): \(error)")
            }
            guard let list = document.arrayValue ?? document["rules"]?.arrayValue else {
                throw hook.error("file", "\(path) must hold a list of rules, or a mapping with 'rules:'")
            }
            entries += list.enumerated().map { ($1, "\(path): rules[\($0)]") }
        }
        guard !entries.isEmpty else { throw StageConfigurationError("stage '\(place)': give 'rules', 'file' or both, with at least one rule") }
        return try entries.map { value, rulePlace in
            var rule = try PatternRule(config: value, place: rulePlace)
            rule.hookName = hookName
            return rule
        }
    }
}
