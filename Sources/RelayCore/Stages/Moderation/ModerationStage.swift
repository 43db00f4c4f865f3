import HTTPTypes
import NIOCore

/// Stage `moderation`: checks the request's text before the upstream is called and the
/// response's text before the client sees it, with pattern rules and external hooks.
///
/// - Input: the text of the messages whose role is in `input.roles` (plain `content` and
///   the `text` parts of multi-part content) is checked whole. `block` answers 400
///   `content_policy_violation` naming the rule, and the upstream is never called; a
///   fail-closed hook that gives no verdict answers 503 `moderation_unavailable`.
///   `redact` rewrites the text before it is sent; `flag` only records.
/// - Holds back: per choice and checked field (content and refusal; with `output.reasoning`
///   the reasoning fields; with `output.tool_arguments` each tool call's arguments), the
///   tail of the text that may still turn into a match: for a literal rule, the longest
///   suffix that begins the phrase; for a regular expression, from where ICU's matcher
///   touched the end of the text (ICU counts a text shorter than the pattern's shortest
///   match as touching it, so a regex rule always holds that length minus one, and more
///   while a longer match may be forming); for external hooks, the window not yet judged (up to a
///   sentence end). Never more than `hold_back` characters (Unicode scalars) per field:
///   longer partial matches are released. Text is released as soon as it cannot be part
///   of a match, and at the end of the choice or the stream.
/// - Commits: held text delays the first content event, and with it the commit point. A
///   chunk whose only payload was held text is not sent, so the response head waits until
///   the first text is released (or a keepalive heartbeat from a stage outside this one).
///   A stream blocked before anything committed still answers 200, with the
///   `content_filter` chunk as its first content.
/// - On silence: emits nothing; text stays held while upstream is silent (put `keepalive`
///   outside this stage to keep the client's connection warm). Waiting for an external
///   hook stalls the stream no longer than that hook's `timeout`.
/// - Output actions: `redact` sends the mask (or the rule's replacement) instead of the
///   match; `block` discards what is held and ends the stream with one chunk whose
///   choices finish with `"content_filter"`, then `[DONE]`, and stops reading upstream,
///   which releases (cancels) the upstream request; `flag` only records.
///
/// Non-streaming answers are checked whole (every checked field of every choice); a block
/// turns each choice into `{"role":"assistant","content":null}` with
/// `finish_reason: "content_filter"`. Error responses pass unchecked. Every verdict other
/// than pass goes into ``UsageRecord/moderation`` and the journal, without the text
/// unless `log_text: true`.
///
/// Options: `hold_back` (characters, default 200), `mask` (default `[redacted]`),
/// `log_text` (default false), `input.roles` (default `[user]`; `[]` checks no input),
/// `output.content` (default true), `output.reasoning`, `output.tool_arguments` (default
/// false), and `hooks`, a list of entries with `kind: patterns` (`rules:` and/or `file:`),
/// or an external kind (`command`, `http` in the gateway) with `timeout` (default 1s),
/// `on_failure` (`open` | `closed`, default closed), `check` (`[input, output]`) and
/// `flagged_action` (default block).
public struct ModerationStage: StreamStage {
    public static let defaultHoldBack = 200
    public static let defaultMask = "[redacted]"

    /// The most characters a checked field may hold back.
    public let holdBack: Int
    public let inputRoles: Set<String>
    public let outputFields: ModerationOutputFields
    let input: ModerationChecker
    let output: ModerationChecker

    /// - Parameters:
    ///   - rules: pattern rules, each checking input, output or both.
    ///   - hooks: external hooks with their settings, asked in this order.
    ///   - clock: what measures hook timeouts (tests pass a manual clock).
    public init(
        rules: [PatternRule] = [],
        hooks: [(settings: ExternalHookSettings, hook: any ModerationHook)] = [],
        holdBack: Int = Self.defaultHoldBack,
        mask: String = Self.defaultMask,
        inputRoles: Set<String> = ["user"],
        outputFields: ModerationOutputFields = .init(),
        logText: Bool = false,
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        precondition(holdBack > 0, "hold_back must be at least one character")
        self.holdBack = holdBack
        self.inputRoles = inputRoles
        self.outputFields = outputFields
        let external = hooks.map { ExternalModerationHook(settings: $0.settings, hook: $0.hook) }
        func checker(_ rules: [PatternRule], _ hooks: [ExternalModerationHook]) -> ModerationChecker {
            ModerationChecker(
                scanner: PatternScanner(rules: rules, holdBack: holdBack, mask: mask), hooks: hooks, holdBack: holdBack, mask: mask,
                logText: logText, clock: clock
            )
        }
        self.input = checker(rules.filter(\.checksInput), external.filter(\.settings.checksInput))
        self.output = checker(rules.filter(\.checksOutput), external.filter(\.settings.checksOutput))
    }

    /// Builds the stage from its config options; throws ``StageConfigurationError``.
    public init(options: [String: JSONValue], hookKinds: ModerationHookKinds = .builtIn, clock: any Clock<Duration> = ContinuousClock()) throws {
        let settings = try ModerationSettings(options: options, hookKinds: hookKinds)
        self.init(
            rules: settings.rules, hooks: settings.hooks, holdBack: settings.holdBack, mask: settings.mask, inputRoles: settings.inputRoles,
            outputFields: settings.outputFields, logText: settings.logText, clock: clock
        )
    }

    public func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        let recorder = ModerationRecorder(record: context.record, logger: context.logger)
        var request = request
        if !self.input.isEmpty, !self.inputRoles.isEmpty {
            request = try await self.checkInput(request, context: context, recorder: recorder)
        }
        let response = try await next(request, context)
        guard response.status.kind == .successful, !self.output.isEmpty, !self.outputFields.isEmpty else { return response }
        switch response.body {
        case .whole(let body):
            return try await self.checkWhole(response, body: body, context: context, recorder: recorder)
        case .events(let events):
            let moderated = ModerationEventSequence(
                base: events, checker: self.output, fields: self.outputFields, recorder: recorder, requestID: context.requestID,
                model: context.requestedModel
            )
            // Checked by patterns alone, a stream keeps its deadlines (the keepalive stage
            // then waits on it directly). External hooks may think for seconds: with them the
            // keepalive stage reads through its pump, and heartbeats go on while a hook thinks.
            let keepsDeadlines = events.waitsWithDeadlines && self.output.hooks.isEmpty
            return ChatResponse(
                status: response.status, headerFields: response.headerFields,
                body: .events(EventStream(moderated, waitsWithDeadlines: keepsDeadlines))
            )
        }
    }

    /// Checks the chosen messages; returns the request to send (rewritten when redacted).
    private func checkInput(_ request: ChatRequest, context: StageContext, recorder: ModerationRecorder) async throws -> ChatRequest {
        var messages = request.messages
        var changed = false
        for position in messages.indices {
            guard case .object(var message) = messages[position], let role = message["role"]?.stringValue, self.inputRoles.contains(role)
            else { continue }
            let location = "input.messages[\(position)]"
            func check(_ text: String) async throws -> String {
                let update = try await self.input.checkWhole(text, location: location, requestID: context.requestID, model: context.requestedModel)
                recorder.note(update.verdicts)
                if let verdict = update.blocked { throw Self.inputError(verdict) }
                return update.released
            }
            switch message["content"] {
            case .string(let text)?:
                let checked = try await check(text)
                guard checked != text else { continue }
                message["content"] = .string(checked)
            case .array(var parts)?:
                var partsChanged = false
                for index in parts.indices {
                    guard case .object(var part) = parts[index], part["type"]?.stringValue == "text", let text = part["text"]?.stringValue
                    else { continue }
                    let checked = try await check(text)
                    guard checked != text else { continue }
                    part["text"] = .string(checked)
                    parts[index] = .object(part)
                    partsChanged = true
                }
                guard partsChanged else { continue }
                message["content"] = .array(parts)
            default:
                continue
            }
            messages[position] = .object(message)
            changed = true
        }
        guard changed else { return request }
        var rewritten = request
        rewritten.set("messages", to: .array(messages))
        return rewritten
    }

    static func inputError(_ verdict: ModerationVerdict) -> RelayError {
        if let failure = verdict.failure {
            return RelayError(
                status: .serviceUnavailable,
                message: "The request could not be checked: moderation hook '\(verdict.hook)' failed (\(failure)).",
                type: "server_error",
                code: "moderation_unavailable"
            )
        }
        return RelayError(
            status: .badRequest,
            message: "The request was blocked by the content policy (rule '\(verdict.rule)').",
            type: "invalid_request_error",
            code: "content_policy_violation"
        )
    }

    /// Checks a non-streaming answer: every checked field of every choice, whole.
    private func checkWhole(_ response: ChatResponse, body: ByteBuffer, context: StageContext, recorder: ModerationRecorder) async throws -> ChatResponse {
        guard case .object(var object)? = try? JSONValue(parsing: body.readableBytesView), case .array(var choices)? = object["choices"] else {
            return response
        }
        var changed = false
        for position in choices.indices {
            guard case .object(var choice) = choices[position], case .object(var message)? = choice["message"] else { continue }
            var messageChanged = false
            for (field, text) in ModeratedField.texts(in: message, fields: self.outputFields) {
                let update = try await self.output.checkWhole(
                    text, location: field.location, requestID: context.requestID, model: context.requestedModel
                )
                recorder.note(update.verdicts)
                if update.blocked != nil { return Self.filtered(response, object: object) }
                guard update.released != text else { continue }
                field.set(update.released, in: &message)
                messageChanged = true
            }
            guard messageChanged else { continue }
            choice["message"] = .object(message)
            choices[position] = .object(choice)
            changed = true
        }
        guard changed else { return response }
        object["choices"] = .array(choices)
        return ChatResponse(status: response.status, headerFields: response.headerFields, body: .whole(ByteBuffer(string: JSONValue.object(object).serialized())))
    }

    /// The answer with every choice emptied and finished by the content filter.
    private static func filtered(_ response: ChatResponse, object: [String: JSONValue]) -> ChatResponse {
        var object = object
        let choices = object["choices"]?.arrayValue ?? []
        object["choices"] = .array(
            choices.enumerated().map { position, choice in
                [
                    "index": choice["index"] ?? .number(Double(position)),
                    "message": ["role": choice["message"]?["role"] ?? "assistant", "content": nil],
                    "finish_reason": "content_filter",
                ]
            }
        )
        return ChatResponse(status: response.status, headerFields: response.headerFields, body: .whole(ByteBuffer(string: JSONValue.object(object).serialized())))
    }
}
