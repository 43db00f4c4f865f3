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

    /// Fails when options are left that no one asked for.
    public func finish() throws {
        guard self.remaining.isEmpty else {
            throw StageConfigurationError("stage '\(self.stage)': unknown option(s) \(self.remaining.keys.sorted().joined(separator: ", "))")
        }
    }
}
