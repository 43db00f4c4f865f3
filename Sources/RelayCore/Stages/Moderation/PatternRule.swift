import Foundation

/// One rule of a `patterns` hook: a literal phrase or a regular expression, what to do when
/// it matches, and where it applies.
///
/// Matching folds case unless `case_sensitive: true`: literals by simple (one scalar to one
/// scalar) lower-case folding, regular expressions with ICU's case-insensitive mode.
/// Positions and lengths are counted in Unicode scalars ("characters" in the docs).
public struct PatternRule: Sendable {
    public enum Pattern: Sendable, Equatable {
        case literal(String)
        case regex(String)
    }

    public let name: String
    public let pattern: Pattern
    public let action: ModerationAction
    /// What replaces a match when the action is `redact` (nil: the stage's mask).
    public let replacement: String?
    public let caseSensitive: Bool
    public let checksInput: Bool
    public let checksOutput: Bool
    /// The `patterns` hook the rule came from (its verdicts' `hook`).
    public internal(set) var hookName = "patterns"
    let matcher: PatternMatcher

    public init(
        name: String,
        pattern: Pattern,
        action: ModerationAction = .block,
        replacement: String? = nil,
        caseSensitive: Bool = false,
        checksInput: Bool = true,
        checksOutput: Bool = true
    ) throws(StageConfigurationError) {
        guard !name.isEmpty else { throw StageConfigurationError("a pattern rule needs a name") }
        guard action != .pass else { throw StageConfigurationError("rule '\(name)': action must be flag, redact or block") }
        self.name = name
        self.pattern = pattern
        self.action = action
        self.replacement = replacement
        self.caseSensitive = caseSensitive
        self.checksInput = checksInput
        self.checksOutput = checksOutput
        switch pattern {
        case .literal(let text):
            let scalars = Array(text.unicodeScalars)
            guard !scalars.isEmpty else { throw StageConfigurationError("rule '\(name)': the literal is empty") }
            self.matcher = .literal(caseSensitive ? scalars : scalars.map(CaseFolding.fold))
        case .regex(let source):
            let regex: NSRegularExpression
            do {
                regex = try NSRegularExpression(pattern: source, options: caseSensitive ? [] : [.caseInsensitive])
            } catch {
                throw StageConfigurationError("rule '\(name)': '\(source)' is not a valid regular expression")
            }
            if regex.firstMatch(in: "", options: [], range: NSRange(location: 0, length: 0)) != nil {
                throw StageConfigurationError("rule '\(name)': the regular expression matches empty text")
            }
            self.matcher = .regex(RegexBox(regex))
        }
    }

    /// The longest text a literal rule matches (nil for a regular expression, whose length is open).
    public var literalLength: Int? {
        if case .literal(let scalars) = self.matcher { return scalars.count }
        return nil
    }

    /// Reads one rule from config: `{name, literal | regex, action, replacement, case_sensitive, check}`.
    public init(config value: JSONValue, place: String) throws(StageConfigurationError) {
        guard case .object(let members) = value else { throw StageConfigurationError("\(place): a rule is a mapping with name and literal or regex") }
        let known: Set<String> = ["name", "literal", "regex", "action", "replacement", "case_sensitive", "check"]
        if let unknown = members.keys.filter({ !known.contains($0) }).sorted().first {
            throw StageConfigurationError("\(place): unknown key '\(unknown)'")
        }
        guard let name = members["name"]?.stringValue, !name.isEmpty else { throw StageConfigurationError("\(place): 'name' is required") }
        let place = "\(place) '\(name)'"
        let pattern: Pattern
        switch (members["literal"], members["regex"]) {
        case (.string(let literal)?, nil): pattern = .literal(literal)
        case (nil, .string(let regex)?): pattern = .regex(regex)
        default: throw StageConfigurationError("\(place): give exactly one of 'literal' and 'regex', as a string")
        }
        var action = ModerationAction.block
        if let value = members["action"] {
            guard let text = value.stringValue, let parsed = ModerationAction(rawValue: text), parsed != .pass else {
                throw StageConfigurationError("\(place): 'action' must be flag, redact or block")
            }
            action = parsed
        }
        var replacement: String?
        if let value = members["replacement"] {
            guard let text = value.stringValue else { throw StageConfigurationError("\(place): 'replacement' must be a string") }
            guard action == .redact else { throw StageConfigurationError("\(place): 'replacement' only goes with action redact") }
            replacement = text
        }
        var caseSensitive = false
        if let value = members["case_sensitive"] {
            guard let flag = value.boolValue else { throw StageConfigurationError("\(place): 'case_sensitive' must be true or false") }
            caseSensitive = flag
        }
        let directions = try ModerationDirections(config: members["check"], place: place)
        do {
            try self.init(
                name: name, pattern: pattern, action: action, replacement: replacement, caseSensitive: caseSensitive,
                checksInput: directions.input, checksOutput: directions.output
            )
        } catch {
            throw StageConfigurationError("\(place): \(error.description)")
        }
    }
}

/// The compiled form of a rule.
enum PatternMatcher: Sendable {
    /// The phrase's scalars, folded unless the rule is case-sensitive.
    case literal([Unicode.Scalar])
    case regex(RegexBox)
}

/// `NSRegularExpression` is immutable after creation and documented as safe to use from
/// several threads at once; Foundation on Linux does not mark it `Sendable`.
final class RegexBox: @unchecked Sendable {
    let regex: NSRegularExpression
    init(_ regex: NSRegularExpression) { self.regex = regex }
}

/// Simple case folding, one scalar to one scalar, so that positions in folded text are
/// positions in the original.
enum CaseFolding {
    static func fold(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        if scalar.isASCII {
            let value = scalar.value
            return value >= 0x41 && value <= 0x5A ? Unicode.Scalar(value + 0x20)! : scalar
        }
        let lower = scalar.properties.lowercaseMapping.unicodeScalars
        return lower.count == 1 ? lower.first! : scalar
    }
}

/// Which way a rule or hook looks: at the request (`input`), at the response (`output`), or both.
struct ModerationDirections: Equatable {
    var input: Bool
    var output: Bool

    /// Reads `check: [input, output]`; both when absent.
    init(config value: JSONValue?, place: String) throws(StageConfigurationError) {
        guard let value else {
            self.input = true
            self.output = true
            return
        }
        let names = value.stringValue.map { [$0] } ?? value.arrayValue?.compactMap(\.stringValue)
        guard let names, names.count == (value.arrayValue?.count ?? 1), !names.isEmpty,
            names.allSatisfy({ $0 == "input" || $0 == "output" })
        else {
            throw StageConfigurationError("\(place): 'check' must list input, output or both")
        }
        self.input = names.contains("input")
        self.output = names.contains("output")
    }
}
