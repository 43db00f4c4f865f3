import Foundation

/// The hook kinds a `moderation` stage may be configured with, and how it reads a rules file.
///
/// RelayCore has no sockets and starts no processes, so its ``builtIn`` set knows only
/// `patterns` and reads rules files as JSON. The gateway adds `command` and `http` and
/// reads YAML (`StageRegistry.gateway` in RelayGateway).
public struct ModerationHookKinds: Sendable {
    /// Builds an external hook from the options of its config entry that are its kind's own
    /// (the common ones, `name`, `timeout`, `on_failure`, `check`, `flagged_action`, are
    /// already read into `settings`). Take every option read from `options`: the stage
    /// rejects any left over.
    public typealias Factory = @Sendable (_ options: inout StageOptions, _ settings: ExternalHookSettings) throws -> any ModerationHook

    public private(set) var factories: [String: Factory]
    /// Reads a rules file: a list of rules, or a mapping with `rules:`.
    public let readRulesFile: @Sendable (_ path: String) throws -> JSONValue

    public init(factories: [String: Factory] = [:], readRulesFile: @escaping @Sendable (_ path: String) throws -> JSONValue = Self.readJSONFile) {
        self.factories = factories
        self.readRulesFile = readRulesFile
    }

    /// `patterns` only, rules files in JSON.
    public static let builtIn = ModerationHookKinds()

    /// This set with one more external kind.
    public func adding(_ kind: String, _ factory: @escaping Factory) -> ModerationHookKinds {
        var kinds = self
        kinds.factories[kind] = factory
        return kinds
    }

    /// The kind names, `patterns` first.
    public var names: [String] { ["patterns"] + self.factories.keys.sorted() }

    public static let readJSONFile: @Sendable (String) throws -> JSONValue = { path in
        try JSONValue(parsing: try Data(contentsOf: URL(fileURLWithPath: path)))
    }
}

extension StageOptions {
    /// Takes a whole-number option within `range`; `default` when absent.
    public mutating func integer(_ key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let value = self.take(key) else { return defaultValue }
        guard let number = value.intValue, range.contains(number) else {
            throw self.error(key, "\(value.serialized()) is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// Takes a string option; `default` when absent.
    public mutating func string(_ key: String, default defaultValue: String?) throws -> String? {
        guard let value = self.take(key) else { return defaultValue }
        guard let text = value.stringValue else { throw self.error(key, "\(value.serialized()) is not a string") }
        return text
    }
}
