import Foundation
import HTTPTypes
import NIOCore
@testable import RelayCore
import Synchronization
import Testing

/// External hooks as the stage drives them: windows of text rather than chunks, verdicts,
/// and what a hook that times out or crashes does under fail-open and fail-closed. The
/// hooks here are stand-ins; the real `command` and `http` hooks are tested in
/// RelayGatewayTests. Timeouts run on a manual clock.
@Suite("Moderation stage: external hooks", .timeLimit(.minutes(1)))
struct ModerationHookTests {
    let clock = ManualClock()

    func stage(
        _ hook: ScriptedModerationHook,
        timeout: Duration = .seconds(2),
        failClosed: Bool = false,
        rules: [PatternRule] = [],
        holdBack: Int = 64,
        checksInput: Bool = false
    ) -> ModerationStage {
        let settings = ExternalHookSettings(name: "judge", timeout: timeout, failClosed: failClosed, checksInput: checksInput)
        return ModerationStage(rules: rules, hooks: [(settings, hook)], holdBack: holdBack, clock: self.clock)
    }

    // MARK: Windows

    @Test("The hook sees the text in windows that end at sentence ends, not once per chunk")
    func windowsAtSentenceEnds() async throws {
        let hook = ScriptedModerationHook { _ in .answer(.pass) }
        let text = "First sentence. Second one! And a question? Then the rest"
        let pieces = stride(from: 0, to: text.count, by: 3).map { String(Array(text)[$0..<min($0 + 3, text.count)]) }
        let client = try await moderate(self.stage(hook), CountingUpstream(try ModerationWire.stream(pieces)))
        #expect(client.content == text)
        #expect(hook.texts == ["First sentence. ", "Second one! ", "And a question? ", "Then the rest"])
        #expect(pieces.count == 19)
        #expect(hook.inputs.allSatisfy { $0.location == "output.content" && $0.requestID == "req_mod" && $0.model == "gpt-4o-mini" })
    }

    @Test("Without sentence ends a window closes when the held text reaches hold_back")
    func windowsBySize() async throws {
        let hook = ScriptedModerationHook { _ in .answer(.pass) }
        let text = String(repeating: "word ", count: 20)
        let upstream = CountingUpstream([try ModerationWire.role()] + (try text.map { try ModerationWire.content(String($0)) }) + [try ModerationWire.finish()])
        let client = try await moderate(self.stage(hook, holdBack: 30), upstream)
        #expect(client.content == text)
        #expect(hook.texts.joined() == text)
        #expect(hook.texts.dropLast().allSatisfy { $0.count == 30 }, "\(hook.texts)")
        #expect(hook.texts.count == 4)
    }

    @Test("Patterns run first: the hook sees their redactions, never the phrase")
    func patternsBeforeHooks() async throws {
        let hook = ScriptedModerationHook { _ in .answer(.pass) }
        let stage = self.stage(hook, rules: [try nightingaleRule(.redact)])
        let client = try await moderate(stage, CountingUpstream(try ModerationWire.stream(Nightingale.threeChunks)))
        #expect(client.content == "The code name is [redacted], keep it secret.")
        #expect(hook.texts.joined() == "The code name is [redacted], keep it secret.")
    }

    // MARK: Verdicts

    @Test("A hook's redact replaces the whole window; block ends the stream; flag records")
    func hookVerdicts() async throws {
        let redacting = ScriptedModerationHook { text in
            .answer(text.contains("secret") ? ModerationHookAnswer(action: .redact, rule: "secrets", replacement: "[hidden]. ") : .pass)
        }
        let redacted = try await moderate(self.stage(redacting), CountingUpstream(try ModerationWire.stream(["Hello. The sec", "ret is 42. Bye"])))
        #expect(redacted.content == "Hello. [hidden]. Bye")
        #expect(!redacted.bytes.contains("secret"))

        let blockingContext = moderationContext()
        let blocking = ScriptedModerationHook { text in .answer(text.contains("secret") ? ModerationHookAnswer(action: .block, rule: "secrets") : .pass) }
        let blocked = try await moderate(self.stage(blocking), CountingUpstream(try ModerationWire.stream(["Hello. The sec", "ret is 42. Bye"])), context: blockingContext)
        #expect(blocked.content == "Hello. ")
        #expect(blocked.finishReasons == ["content_filter"])
        #expect(blockingContext.record.snapshot.moderation == [ModerationVerdict(rule: "secrets", action: .block, location: "output.content", hook: "judge")])

        let flaggingContext = moderationContext()
        let flagging = ScriptedModerationHook { text in .answer(text.contains("secret") ? ModerationHookAnswer(action: .flag) : .pass) }
        let flagged = try await moderate(self.stage(flagging), CountingUpstream(try ModerationWire.stream(["Hello. The sec", "ret is 42. Bye"])), context: flaggingContext)
        #expect(flagged.content == "Hello. The secret is 42. Bye")
        #expect(flaggingContext.record.snapshot.moderation == [ModerationVerdict(rule: "judge", action: .flag, location: "output.content", hook: "judge")])
    }

    @Test("Several hooks are asked at once; the most severe answer wins and each verdict is recorded")
    func severalHooks() async throws {
        let flagging = ScriptedModerationHook { _ in .answer(ModerationHookAnswer(action: .flag, rule: "mild")) }
        let blocking = ScriptedModerationHook { text in .answer(text.contains("bad") ? ModerationHookAnswer(action: .block, rule: "harsh") : .pass) }
        let stage = ModerationStage(
            hooks: [(ExternalHookSettings(name: "first", checksInput: false), flagging), (ExternalHookSettings(name: "second", checksInput: false), blocking)],
            clock: self.clock
        )
        let context = moderationContext()
        let client = try await moderate(stage, CountingUpstream(try ModerationWire.stream(["Fine. ", "Then bad. "])), context: context)
        #expect(client.content == "Fine. ")
        #expect(context.record.snapshot.moderation.map(\.summary) == [
            "flag mild in output.content (first)", "flag mild in output.content (first)", "block harsh in output.content (second)",
        ])
    }

    // MARK: Timeouts and crashes

    @Test("A hook that times out, fail-open: the stream waits exactly the timeout, then the text goes on and the failure is recorded")
    func timeoutFailOpen() async throws {
        let hook = ScriptedModerationHook { text in text.contains("slow") ? .hang : .answer(.pass) }
        let context = moderationContext()
        var consumer = ModerationConsumer(try await self.stream(self.stage(hook, timeout: .milliseconds(500)), pieces: ["Quick. ", "A slow one. ", "Done."], context: context))
        #expect(try await consumer.next()?.facts?.hasRole == true)
        #expect(try await consumer.contentNext() == "Quick. ")
        let deadline = await self.clock.nextSleeperDeadline()
        #expect(deadline == ManualClock.start.advanced(by: .milliseconds(500)), "the stage waits no longer than the hook's timeout")
        #expect(hook.cancelled == 0)
        self.clock.advance(to: deadline)
        #expect(try await consumer.contentNext() == "A slow one. ")
        #expect(hook.cancelled == 1, "the hook's call was cancelled")
        #expect(try await consumer.contentNext() == "Done.")
        #expect(context.record.snapshot.moderation == [
            ModerationVerdict(rule: "judge", action: .pass, location: "output.content", hook: "judge", failure: "timeout")
        ])
    }

    @Test("A hook that times out, fail-closed: the stream ends with content_filter after the timeout")
    func timeoutFailClosed() async throws {
        let hook = ScriptedModerationHook { text in text.contains("slow") ? .hang : .answer(.pass) }
        let context = moderationContext()
        var consumer = ModerationConsumer(
            try await self.stream(self.stage(hook, timeout: .milliseconds(500), failClosed: true), pieces: ["Quick. ", "A slow one. ", "Done."], context: context)
        )
        _ = try await consumer.next()
        #expect(try await consumer.contentNext() == "Quick. ")
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        let filter = try #require(try await consumer.next())
        #expect(filter.facts?.finishReason == "content_filter")
        #expect(try await consumer.next()?.kind == .done)
        #expect(try await consumer.next() == nil)
        #expect(context.record.snapshot.moderation == [
            ModerationVerdict(rule: "judge", action: .block, location: "output.content", hook: "judge", failure: "timeout")
        ])
    }

    @Test("A hook that crashes, fail-open: the text goes on at once, the failure is recorded")
    func crashFailOpen() async throws {
        let hook = ScriptedModerationHook { text in text.contains("boom") ? .crash : .answer(.pass) }
        let context = moderationContext()
        let client = try await moderate(self.stage(hook), CountingUpstream(try ModerationWire.stream(["Fine. ", "Then boom. ", "After."])), context: context)
        #expect(client.content == "Fine. Then boom. After.")
        #expect(context.record.snapshot.moderation == [
            ModerationVerdict(rule: "judge", action: .pass, location: "output.content", hook: "judge", failure: "crashed")
        ])
        #expect(self.clock.sleeperCount == 0, "no timer is left behind")
    }

    @Test("A hook that crashes, fail-closed: the stream ends with content_filter")
    func crashFailClosed() async throws {
        let hook = ScriptedModerationHook { text in text.contains("boom") ? .crash : .answer(.pass) }
        let context = moderationContext()
        let client = try await moderate(self.stage(hook, failClosed: true), CountingUpstream(try ModerationWire.stream(["Fine. ", "Then boom. ", "After."])), context: context)
        #expect(client.content == "Fine. ")
        #expect(client.finishReasons == ["content_filter"])
        #expect(!client.bytes.contains("boom"))
        #expect(context.record.snapshot.moderation.first?.failure == "crashed")
    }

    @Test("Input: a hook that blocks answers 400; one that times out fail-closed answers 503; fail-open lets the request through")
    func inputHooks() async throws {
        let body = #"[{"role":"user","content":"please be slow"},{"role":"user","content":"and bad"}]"#
        let blocking = ScriptedModerationHook { text in .answer(text.contains("bad") ? ModerationHookAnswer(action: .block, rule: "abuse") : .pass) }
        await #expect(throws: RelayError.self) {
            _ = try await self.stage(blocking, checksInput: true).handle(try moderationRequest(messages: body), context: moderationContext()) { _, _ in
                Issue.record("the upstream must not be called")
                return ChatResponse(status: .ok, body: .whole(ByteBuffer()))
            }
        }
        do {
            _ = try await self.stage(blocking, checksInput: true).handle(try moderationRequest(messages: body), context: moderationContext()) { _, _ in
                ChatResponse(status: .ok, body: .whole(ByteBuffer()))
            }
        } catch let error as RelayError {
            #expect(error.status == .badRequest)
            #expect(error.code == "content_policy_violation")
            #expect(error.message.contains("'abuse'"))
        }

        let slow = ScriptedModerationHook { text in text.contains("slow") ? .hang : .answer(.pass) }
        let closed = self.stage(slow, timeout: .seconds(1), failClosed: true, checksInput: true)
        let task = Task {
            try await closed.handle(try moderationRequest(messages: body), context: moderationContext()) { _, _ in
                ChatResponse(status: .ok, body: .whole(ByteBuffer()))
            }
        }
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        do {
            _ = try await task.value
            Issue.record("a fail-closed hook that times out refuses the request")
        } catch let error as RelayError {
            #expect(error.status == .serviceUnavailable)
            #expect(error.code == "moderation_unavailable")
        }

        let open = self.stage(slow, timeout: .seconds(1), failClosed: false, checksInput: true)
        let context = moderationContext()
        let called = Mutex(false)
        let openTask = Task {
            try await open.handle(try moderationRequest(messages: body), context: context) { _, _ in
                called.withLock { $0 = true }
                return ChatResponse(status: .ok, body: .whole(ByteBuffer()))
            }
        }
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        _ = try await openTask.value
        #expect(called.withLock { $0 })
        #expect(context.record.snapshot.moderation == [
            ModerationVerdict(rule: "judge", action: .pass, location: "input.messages[0]", hook: "judge", failure: "timeout")
        ])
    }

    @Test("Answers in OpenAI's moderation shape and in the simple shape are both understood")
    func answerShapes() throws {
        let openAI: JSONValue = [
            "id": "modr-1", "model": "omni-moderation-latest",
            "results": [["flagged": true, "categories": ["violence": true, "harassment": false, "hate": true], "category_scores": ["violence": .number(0.9)]]],
        ]
        #expect(try ModerationHookAnswer(json: openAI, flaggedAction: .block) == ModerationHookAnswer(action: .block, rule: "hate,violence"))
        #expect(try ModerationHookAnswer(json: ["results": [["flagged": false, "categories": [:]]]], flaggedAction: .block) == .pass)
        #expect(try ModerationHookAnswer(json: ["action": "redact", "replacement": "***"], flaggedAction: .block) == ModerationHookAnswer(action: .redact, replacement: "***"))
        #expect(throws: ModerationHookError.self) { try ModerationHookAnswer(json: ["verdict": "ok"], flaggedAction: .block) }
        #expect(throws: ModerationHookError.self) { try ModerationHookAnswer(json: ["action": "explode"], flaggedAction: .block) }
    }

    private func stream(_ stage: ModerationStage, pieces: [String], context: StageContext) async throws -> EventStream {
        let upstream = CountingUpstream(try ModerationWire.stream(pieces))
        let response = try await stage.handle(try moderationRequest(), context: context) { _, _ in
            ChatResponse(status: .ok, body: .events(upstream.stream))
        }
        guard case .events(let events) = response.body else { throw ModerationTestFailure("no stream") }
        return events
    }
}

/// A hook that answers as the test says, and counts what it saw.
final class ScriptedModerationHook: ModerationHook {
    enum Behaviour: Sendable {
        case answer(ModerationHookAnswer)
        /// Never answers; returns only when cancelled.
        case hang
        case crash
    }

    private let decide: @Sendable (String) -> Behaviour
    private let state = Mutex<(inputs: [ModerationHookInput], cancelled: Int)>(([], 0))

    init(_ decide: @escaping @Sendable (String) -> Behaviour) { self.decide = decide }

    var inputs: [ModerationHookInput] { self.state.withLock { $0.inputs } }
    var texts: [String] { self.inputs.map(\.text) }
    var cancelled: Int { self.state.withLock { $0.cancelled } }

    func check(_ input: ModerationHookInput) async throws -> ModerationHookAnswer {
        self.state.withLock { $0.inputs.append(input) }
        switch self.decide(input.text) {
        case .answer(let answer):
            return answer
        case .crash:
            throw ModerationHookError.crashed("the stand-in hook exited")
        case .hang:
            // A stream nobody feeds: iterating it ends only when the task is cancelled.
            let (silence, continuation) = AsyncStream<Never>.makeStream()
            for await _ in silence {}
            withExtendedLifetime(continuation) {}
            self.state.withLock { $0.cancelled += 1 }
            throw CancellationError()
        }
    }
}

/// Reads a stage's stream on a task of its own, so the test can move the clock meanwhile.
struct ModerationConsumer {
    private var received: AsyncThrowingStream<StreamEvent, any Error>.Iterator

    init(_ events: EventStream) {
        let (stream, continuation) = AsyncThrowingStream<StreamEvent, any Error>.makeStream()
        Task {
            do {
                for try await event in events { continuation.yield(event) }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        self.received = stream.makeAsyncIterator()
    }

    mutating func next() async throws -> StreamEvent? { try await self.received.next() }

    /// The content of the next event.
    mutating func contentNext() async throws -> String? {
        guard let event = try await self.next() else { return nil }
        return ModerationClientView(events: [event]).content
    }
}
