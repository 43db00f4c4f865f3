/// An external moderation service the `moderation` stage asks about windows of text: a
/// long-running child process, an HTTP endpoint, or a test's stand-in.
///
/// The stage applies the timeout and the failure policy; a hook only answers. It must
/// return promptly (throwing) when the calling task is cancelled, which is how a timeout
/// reaches it.
public protocol ModerationHook: Sendable {
    func check(_ input: ModerationHookInput) async throws -> ModerationHookAnswer
}

/// One window of text for a hook to judge.
public struct ModerationHookInput: Sendable, Equatable {
    public var text: String
    /// Where the text is (`input.messages[0]`, `output.content`, ...).
    public var location: String
    public var requestID: String
    /// The model the client asked for.
    public var model: String

    public init(text: String, location: String, requestID: String, model: String) {
        self.text = text
        self.location = location
        self.requestID = requestID
        self.model = model
    }

    /// The request as the `command` hook writes it (one JSON line) and the `http` hook's
    /// context: `{"text","where","request_id","model"}`.
    public var json: [String: JSONValue] {
        ["text": .string(self.text), "where": .string(self.location), "request_id": .string(self.requestID), "model": .string(self.model)]
    }
}

/// A hook's verdict on one window.
public struct ModerationHookAnswer: Sendable, Equatable {
    public var action: ModerationAction
    /// The rule or categories the hook named.
    public var rule: String?
    /// For `redact`: the text that replaces the whole window (nil: the stage's mask).
    public var replacement: String?

    public init(action: ModerationAction, rule: String? = nil, replacement: String? = nil) {
        self.action = action
        self.rule = rule
        self.replacement = replacement
    }

    public static let pass = ModerationHookAnswer(action: .pass)

    /// Reads either answer shape a hook may give:
    /// - the simple one, `{"action": "pass"|"flag"|"redact"|"block", "replacement"?, "rule"?}`;
    /// - OpenAI's `/v1/moderations` response, `{"results": [{"flagged", "categories"}]}`,
    ///   where a flagged result means `flaggedAction` and names the true categories.
    public init(json: JSONValue, flaggedAction: ModerationAction) throws(ModerationHookError) {
        if let results = json["results"]?.arrayValue {
            var categories: [String] = []
            var flagged = false
            for result in results {
                guard let isFlagged = result["flagged"]?.boolValue else { throw .badAnswer("a result has no boolean 'flagged'") }
                guard isFlagged else { continue }
                flagged = true
                let named = result["categories"]?.objectValue?.filter { $0.value.boolValue == true }.map(\.key).sorted() ?? []
                categories.append(contentsOf: named.filter { !categories.contains($0) })
            }
            self.init(action: flagged ? flaggedAction : .pass, rule: categories.isEmpty ? nil : categories.joined(separator: ","))
            return
        }
        guard let name = json["action"]?.stringValue else { throw .badAnswer("neither 'action' nor 'results' in the answer") }
        guard let action = ModerationAction(rawValue: name) else { throw .badAnswer("unknown action '\(name)'") }
        var replacement: String?
        if let value = json["replacement"], value != .null {
            guard let text = value.stringValue else { throw .badAnswer("'replacement' is not a string") }
            replacement = text
        }
        self.init(action: action, rule: json["rule"]?.stringValue, replacement: replacement)
    }
}

/// Why a hook gave no verdict; its `reason` is what the usage record keeps.
public struct ModerationHookError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `timeout`, `crashed`, `unreachable` or `bad answer`.
    public var reason: String
    public var detail: String

    public init(reason: String, detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public static func timeout(_ after: Duration) -> ModerationHookError { .init(reason: "timeout", detail: "no answer within \(after)") }
    public static func crashed(_ detail: String) -> ModerationHookError { .init(reason: "crashed", detail: detail) }
    public static func unreachable(_ detail: String) -> ModerationHookError { .init(reason: "unreachable", detail: detail) }
    public static func badAnswer(_ detail: String) -> ModerationHookError { .init(reason: "bad answer", detail: detail) }

    public var description: String { "\(self.reason): \(self.detail)" }
}

/// What an external hook's entry in the config says besides its kind's own options.
public struct ExternalHookSettings: Sendable, Equatable {
    public var name: String
    /// The longest the stage waits for one verdict.
    public var timeout: Duration
    /// Whether a hook that gives no verdict blocks (true) or lets the text pass (false).
    public var failClosed: Bool
    public var checksInput: Bool
    public var checksOutput: Bool
    /// What a flagged OpenAI-shaped answer means.
    public var flaggedAction: ModerationAction

    public init(
        name: String,
        timeout: Duration = .seconds(1),
        failClosed: Bool = true,
        checksInput: Bool = true,
        checksOutput: Bool = true,
        flaggedAction: ModerationAction = .block
    ) {
        self.name = name
        self.timeout = timeout
        self.failClosed = failClosed
        self.checksInput = checksInput
        self.checksOutput = checksOutput
        self.flaggedAction = flaggedAction
    }
}

/// A hook with its settings: asks it within the timeout and turns silence into the
/// configured policy.
struct ExternalModerationHook: Sendable {
    let settings: ExternalHookSettings
    let hook: any ModerationHook

    /// The hook's answer, or the failure that replaced it (answer `pass` when fail-open,
    /// `block` when fail-closed). Throws only `CancellationError`, when the caller is cancelled.
    func judge<C: Clock<Duration>>(_ input: ModerationHookInput, clock: C) async throws -> (answer: ModerationHookAnswer, failure: ModerationHookError?) {
        let hook = self.hook
        let timeout = self.settings.timeout
        do {
            let answer = try await withThrowingTaskGroup(of: ModerationHookAnswer?.self) { group in
                group.addTask { try await hook.check(input) }
                group.addTask {
                    // The daemon's clock: a sleep that keeps nothing once cancelled (TimerQueue).
                    if clock is ContinuousClock {
                        try await TimerQueue.shared.sleep(for: timeout)
                    } else {
                        try await clock.sleep(for: timeout)
                    }
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let answer = first else { throw ModerationHookError.timeout(timeout) }
                return answer
            }
            return (answer, nil)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            let failure = (error as? ModerationHookError) ?? .unreachable("\(error)")
            return (ModerationHookAnswer(action: self.settings.failClosed ? .block : .pass), failure)
        }
    }
}
