import Foundation
public import RelayCore
#if canImport(Glibc)
import Glibc
#endif

/// One entry of the config's `policy:` list: which callers it is for, which models they
/// may use, and how much.
///
/// A rule matches a caller when every matcher it has matches (`user`, `group`, `unit`;
/// each a pattern or a list of patterns, any of which may match). A rule without
/// matchers matches every caller: the default, last. Patterns are shell globs
/// (`fnmatch(3)`: `*`, `?`, `[...]`); a number also matches the uid or gid.
public struct PolicyRule: Sendable, Equatable, Codable {
    /// Named in denials and in the log.
    public var name: String
    /// The caller's user name (or uid).
    public var users: [String]
    /// The caller's primary or any supplementary group, by name (or gid).
    public var groups: [String]
    /// The system unit the caller runs in (`app-*.service`); never a user's own unit.
    public var units: [String]
    /// Model names and globs the caller may use, matched against the name asked for and
    /// the other names (name, aliases) of the same model. Nil: every model.
    public var models: [String]?
    /// Chat requests a caller may start in any 60 seconds.
    public var requestsPerMinute: Int?
    /// Chat requests (streaming or not) a caller may have in flight at once.
    public var concurrentStreams: Int?
    /// Prompt plus completion tokens a caller may spend per day (UTC).
    public var tokensPerDay: Int?

    public init(
        name: String,
        users: [String] = [],
        groups: [String] = [],
        units: [String] = [],
        models: [String]? = nil,
        requestsPerMinute: Int? = nil,
        concurrentStreams: Int? = nil,
        tokensPerDay: Int? = nil
    ) {
        self.name = name
        self.users = users
        self.groups = groups
        self.units = units
        self.models = models
        self.requestsPerMinute = requestsPerMinute
        self.concurrentStreams = concurrentStreams
        self.tokensPerDay = tokensPerDay
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, user, group, unit, models
        case requestsPerMinute = "requests_per_minute", concurrentStreams = "concurrent_streams", tokensPerDay = "tokens_per_day"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        func patterns(_ key: CodingKeys) throws -> [String] {
            if let one = try? c.decodeIfPresent(String.self, forKey: key) { return [one] }
            if let number = try? c.decodeIfPresent(Int.self, forKey: key) { return [String(number)] }
            return try c.decodeIfPresent([String].self, forKey: key) ?? []
        }
        self.init(
            name: try c.decodeIfPresent(String.self, forKey: .name) ?? "",
            users: try patterns(.user),
            groups: try patterns(.group),
            units: try patterns(.unit),
            models: try c.decodeIfPresent([String].self, forKey: .models),
            requestsPerMinute: try c.decodeIfPresent(Int.self, forKey: .requestsPerMinute),
            concurrentStreams: try c.decodeIfPresent(Int.self, forKey: .concurrentStreams),
            tokensPerDay: try c.decodeIfPresent(Int.self, forKey: .tokensPerDay)
        )
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.name, forKey: .name)
        if !self.users.isEmpty { try c.encode(self.users, forKey: .user) }
        if !self.groups.isEmpty { try c.encode(self.groups, forKey: .group) }
        if !self.units.isEmpty { try c.encode(self.units, forKey: .unit) }
        try c.encodeIfPresent(self.models, forKey: .models)
        try c.encodeIfPresent(self.requestsPerMinute, forKey: .requestsPerMinute)
        try c.encodeIfPresent(self.concurrentStreams, forKey: .concurrentStreams)
        try c.encodeIfPresent(self.tokensPerDay, forKey: .tokensPerDay)
    }

    /// True for a rule without matchers: it matches every caller.
    public var matchesEveryone: Bool { self.users.isEmpty && self.groups.isEmpty && self.units.isEmpty }

    /// Whether this rule is for `caller` (nil, a caller the kernel could not name, only
    /// matches a rule without matchers).
    public func matches(_ caller: CallerIdentity?) -> Bool {
        if self.matchesEveryone { return true }
        guard let caller else { return false }
        if !self.users.isEmpty {
            guard self.users.contains(where: { Self.glob($0, matches: caller.user, id: caller.uid) }) else { return false }
        }
        if !self.groups.isEmpty {
            let memberships = caller.allGroups
            let matched = self.groups.contains { pattern in
                memberships.contains { Self.glob(pattern, matches: $0.name, id: $0.id) }
            }
            guard matched else { return false }
        }
        if !self.units.isEmpty {
            guard let unit = caller.unit, self.units.contains(where: { Self.glob($0, matches: unit) }) else { return false }
        }
        return true
    }

    /// Whether callers under this rule may use a model known by `names` (the name asked
    /// for first, then, for a configured model, its name and aliases: a model and its
    /// aliases are one model).
    public func allowsModel(named names: [String]) -> Bool {
        guard let models = self.models else { return true }
        return models.contains { pattern in names.contains { Self.glob(pattern, matches: $0) } }
    }

    /// A one-line summary for `check-config`.
    public var summary: String {
        var who: [String] = []
        if !self.users.isEmpty { who.append("user \(self.users.joined(separator: "|"))") }
        if !self.groups.isEmpty { who.append("group \(self.groups.joined(separator: "|"))") }
        if !self.units.isEmpty { who.append("unit \(self.units.joined(separator: "|"))") }
        var limits: [String] = []
        if let rpm = self.requestsPerMinute { limits.append("\(rpm)/min") }
        if let streams = self.concurrentStreams { limits.append("\(streams) at once") }
        if let tokens = self.tokensPerDay { limits.append("\(tokens) tokens/day") }
        let models = self.models.map { $0.isEmpty ? "no model" : $0.joined(separator: ", ") } ?? "every model"
        return "policy \(self.name): \(who.isEmpty ? "every caller" : who.joined(separator: " and ")) -> \(models)"
            + (limits.isEmpty ? "" : " (\(limits.joined(separator: ", ")))")
    }

    /// `fnmatch(3)` without flags (`*` also matches `/`, as in `openrouter/*`); a pattern
    /// that is a number also matches the id.
    static func glob(_ pattern: String, matches name: String?, id: UInt32? = nil) -> Bool {
        if let id, UInt32(pattern) == id { return true }
        guard let name else { return false }
        return fnmatch(pattern, name, 0) == 0
    }
}
