/// Everything that judges text going one way (the request's or the response's): the
/// pattern rules first, then the external hooks, window by window.
///
/// External hooks never see text the patterns have not cleared, and see it in windows: up
/// to the last sentence end in the cleared text, or all of it once the held text has
/// reached `holdBack` scalars, or all of it at the end of the channel. The hooks of one
/// window are asked at the same time; the most severe answer wins, and the first redacting
/// hook's replacement (in config order) replaces the window.
struct ModerationChecker: Sendable {
    let scanner: PatternScanner
    let hooks: [ExternalModerationHook]
    let holdBack: Int
    let mask: String
    let logText: Bool
    let clock: any Clock<Duration>

    /// What one update of a channel produced.
    struct Update {
        /// The text that may go to the client now.
        var released = ""
        /// Every verdict other than a plain pass, in order.
        var verdicts: [ModerationVerdict] = []
        /// The verdict that blocks, if one did; nothing is released then.
        var blocked: ModerationVerdict?
    }

    /// A fresh channel for this checker's rules.
    func makeHeldText() -> HeldText { HeldText(ruleCount: self.scanner.rules.count) }

    var isEmpty: Bool { self.scanner.rules.isEmpty && self.hooks.isEmpty }

    /// Appends `text` to `held`, runs the checks, and releases what is clear. With `final`,
    /// nothing more will come on this channel and everything left is judged and released.
    func update(
        _ held: inout HeldText,
        adding text: String,
        final: Bool,
        location: String,
        requestID: String,
        model: String
    ) async throws -> Update {
        var update = Update()
        held.append(text.unicodeScalars)
        let blocking = self.scanner.scan(&held, final: final) { match in
            update.verdicts.append(
                ModerationVerdict(
                    rule: match.rule.name, action: match.rule.action, location: location, hook: match.rule.hookName,
                    text: self.logText ? match.text : nil
                )
            )
        }
        if blocking != nil {
            update.blocked = update.verdicts.last
            held.discard()
            return update
        }
        if self.hooks.isEmpty {
            held.approved = held.cleared
        } else {
            while held.approved < held.cleared, let cut = self.windowEnd(held, final: final) {
                let window = held.text(held.approved..<cut)
                let input = ModerationHookInput(text: window, location: location, requestID: requestID, model: model)
                let judged = try await self.judge(input)
                update.verdicts.append(contentsOf: judged.verdicts)
                switch judged.action {
                case .block:
                    update.blocked = judged.verdicts.last { $0.action == .block }
                    held.discard()
                    return update
                case .redact:
                    let replacement = Array((judged.replacement ?? self.mask).unicodeScalars)
                    let start = held.approved
                    held.replace(start..<cut, with: replacement)
                    held.approved = start + replacement.count
                case .flag, .pass:
                    held.approved = cut
                }
            }
        }
        update.released = held.releaseApproved()
        return update
    }

    /// Where the next window for the hooks ends, or nil to wait for more text.
    func windowEnd(_ held: HeldText, final: Bool) -> Int? {
        let start = held.approved
        let end = held.cleared
        guard start < end else { return nil }
        if final, end == held.scalars.count { return end }
        let scalars = held.scalars
        var index = end - 1
        while index >= start {
            switch scalars[index] {
            case "\n", "\u{3002}", "\u{FF01}", "\u{FF1F}":  // newline; ideographic full stop, fullwidth ! and ?
                return index + 1
            case " ", "\t":
                if index > start, ".!?\u{2026}".unicodeScalars.contains(scalars[index - 1]) { return index + 1 }
            default:
                break
            }
            index -= 1
        }
        return scalars.count >= self.holdBack ? end : nil
    }

    /// Asks every hook about one window at once and combines their answers.
    func judge(_ input: ModerationHookInput) async throws -> (action: ModerationAction, replacement: String?, verdicts: [ModerationVerdict]) {
        let clock = self.clock
        let answers = try await withThrowingTaskGroup(of: (Int, ModerationHookAnswer, ModerationHookError?).self) { group in
            for (index, hook) in self.hooks.enumerated() {
                group.addTask {
                    let (answer, failure) = try await hook.judge(input, clock: clock)
                    return (index, answer, failure)
                }
            }
            var answers: [(Int, ModerationHookAnswer, ModerationHookError?)] = []
            for try await answer in group { answers.append(answer) }
            return answers.sorted { $0.0 < $1.0 }
        }
        var action = ModerationAction.pass
        var replacement: String?
        var verdicts: [ModerationVerdict] = []
        for (index, answer, failure) in answers {
            let settings = self.hooks[index].settings
            action = max(action, answer.action)
            if answer.action == .redact, replacement == nil { replacement = answer.replacement }
            guard answer.action != .pass || failure != nil else { continue }
            verdicts.append(
                ModerationVerdict(
                    rule: answer.rule ?? settings.name, action: answer.action, location: input.location, hook: settings.name,
                    failure: failure?.reason, text: self.logText ? input.text : nil
                )
            )
        }
        return (action, replacement, verdicts)
    }

    /// Judges a whole text at once (a request message, a non-streaming answer).
    func checkWhole(_ text: String, location: String, requestID: String, model: String) async throws -> Update {
        var held = self.makeHeldText()
        return try await self.update(&held, adding: text, final: true, location: location, requestID: requestID, model: model)
    }
}
