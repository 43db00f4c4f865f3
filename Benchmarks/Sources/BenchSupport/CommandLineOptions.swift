/// The `--name value` and `--flag` arguments of a command, read once, with errors that name
/// the option.
///
/// The tools take a handful of options, so this replaces a dependency on an argument parser
/// (the package depends on SwiftNIO only).
public struct CommandLineOptions {
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    public let usage: String

    /// Reads `arguments` (without the program name). Options named in `flagNames` take no
    /// value; every other option takes exactly one and may repeat.
    public init(_ arguments: [String], flagNames: Set<String>, usage: String) throws {
        self.usage = usage
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            guard argument.hasPrefix("--") else { throw OptionError("unexpected argument '\(argument)'\n\(usage)") }
            var name = String(argument.dropFirst(2))
            var inlineValue: String?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if name == "help" { throw OptionError(usage) }
            if flagNames.contains(name) {
                self.flags.insert(name)
                continue
            }
            guard let value = inlineValue ?? iterator.next() else { throw OptionError("option --\(name) needs a value\n\(usage)") }
            self.values[name, default: []].append(value)
        }
    }

    public func flag(_ name: String) -> Bool { self.flags.contains(name) }

    /// Every value given for `name`, in order; comma-separated lists are split too.
    public func list(_ name: String) -> [String] {
        (self.values[name] ?? []).flatMap { $0.split(separator: ",").map(String.init) }
    }

    public func string(_ name: String) -> String? { self.values[name]?.last }

    public func string(_ name: String, default defaultValue: String) -> String { self.string(name) ?? defaultValue }

    public func integer(_ name: String) throws -> Int? {
        guard let text = self.string(name) else { return nil }
        guard let value = Int(text) else { throw OptionError("option --\(name): '\(text)' is not a whole number") }
        return value
    }

    public func integer(_ name: String, default defaultValue: Int) throws -> Int { try self.integer(name) ?? defaultValue }

    public func double(_ name: String) throws -> Double? {
        guard let text = self.string(name) else { return nil }
        guard let value = Double(text) else { throw OptionError("option --\(name): '\(text)' is not a number") }
        return value
    }

    /// Rejects options the command does not know, so that a typo is not silently ignored.
    public func rejectUnknown(besides known: Set<String>) throws {
        let unknown = Set(self.values.keys).union(self.flags).subtracting(known)
        if let name = unknown.sorted().first { throw OptionError("unknown option --\(name)\n\(self.usage)") }
    }
}

/// A command line that cannot be run; the message says why.
public struct OptionError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
