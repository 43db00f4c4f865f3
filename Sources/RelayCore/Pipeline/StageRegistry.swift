import Foundation

/// The stages a configuration may name, by name.
///
/// Adding a stage means writing one type and one line in ``StageRegistry/builtIn``; the
/// server does not change.
public struct StageRegistry: Sendable {
    /// Builds a stage from the options written under its name in the config.
    public typealias Factory = @Sendable (_ options: [String: JSONValue]) throws -> any StreamStage

    private var factories: [String: Factory]

    public init(_ factories: [String: Factory] = [:]) {
        self.factories = factories
    }

    /// The stages that ship with chatrelayd.
    public static let builtIn = StageRegistry([
        "passthrough": { options in
            try StageOptions(options, stage: "passthrough").finish()
            return PassThroughStage()
        },
        "keepalive": { options in try KeepaliveStage(options: options) },
        // `patterns` hooks only; the gateway's registry adds `command` and `http`.
        "moderation": { options in try ModerationStage(options: options) },
        "retry": { options in try RetryStage(options: options) },
        "usage": { options in
            try StageOptions(options, stage: "usage").finish()
            return UsageStage()
        },
    ])

    public var names: [String] { self.factories.keys.sorted() }

    public mutating func register(_ name: String, factory: @escaping Factory) {
        self.factories[name] = factory
    }

    /// Makes the stage `name`; throws a ``StageConfigurationError`` naming what is wrong.
    public func makeStage(named name: String, options: [String: JSONValue]) throws -> any StreamStage {
        guard let factory = self.factories[name] else {
            throw StageConfigurationError("unknown stage '\(name)' (known: \(self.names.joined(separator: ", ")))")
        }
        return try factory(options)
    }
}

/// A stage's options were wrong; the message says which and why.
public struct StageConfigurationError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Reads a stage's options and rejects the ones it did not read, so a typo is an error.
public struct StageOptions {
    private var remaining: [String: JSONValue]
    private let stage: String

    public init(_ options: [String: JSONValue], stage: String) {
        self.remaining = options
        self.stage = stage
    }

    /// Takes an option out; nil when absent.
    public mutating func take(_ key: String) -> JSONValue? {
        self.remaining.removeValue(forKey: key)
    }

    /// Takes a duration option: a string such as `500ms`, `15s`, `2m` or `1h`, or a number
    /// of seconds; `default` when absent.
    public mutating func duration(_ key: String, default defaultValue: Duration) throws -> Duration {
        guard let value = self.take(key) else { return defaultValue }
        let parsed: Duration?
        switch value {
        case .number(let seconds): parsed = Duration.parsed(seconds: seconds)
        case .string(let text): parsed = Self.parseDuration(text)
        default: parsed = nil
        }
        guard let parsed else {
            throw self.error(key, "\(value.serialized()) is not a duration (write it like 500ms, 15s, 2m or 1h, or a number of seconds)")
        }
        return parsed
    }

    /// Takes a boolean option; `default` when absent.
    public mutating func bool(_ key: String, default defaultValue: Bool) throws -> Bool {
        guard let value = self.take(key) else { return defaultValue }
        guard let flag = value.boolValue else { throw self.error(key, "\(value.serialized()) is not true or false") }
        return flag
    }

    /// Takes a string option that must be one of `allowed`; `default` when absent.
    public mutating func choice(_ key: String, of allowed: [String], default defaultValue: String) throws -> String {
        guard let value = self.take(key) else { return defaultValue }
        guard let text = value.stringValue, allowed.contains(text) else {
            throw self.error(key, "\(value.serialized()) is not one of \(allowed.joined(separator: ", "))")
        }
        return text
    }

    /// An error about option `key` of this stage.
    public func error(_ key: String, _ problem: String) -> StageConfigurationError {
        StageConfigurationError("stage '\(self.stage)': option '\(key)': \(problem)")
    }

    /// Parses `500ms`, `15s`, `2m`, `1h` or a plain number of seconds; nil when it is none
    /// of those or negative.
    public static func parseDuration(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        // Longest suffix first, so that "ms" is not read as "m".
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            if number.last?.isNumber == true || number.last == ".", let value = Double(number) {
                return Duration.parsed(seconds: value * scale)
            }
        }
        return Double(trimmed).flatMap { Duration.parsed(seconds: $0) }
    }

    /// Fails when options are left that no one asked for.
    public func finish() throws {
        guard self.remaining.isEmpty else {
            throw StageConfigurationError("stage '\(self.stage)': unknown option(s) \(self.remaining.keys.sorted().joined(separator: ", "))")
        }
    }
}
