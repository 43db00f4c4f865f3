import HTTPTypes
import Logging
import NIOCore
@testable import RelayCore
import Synchronization
import Testing

@Suite("Keepalive stage", .timeLimit(.minutes(1)))
struct KeepaliveStageTests {
    let clock = ManualClock()
    let t0 = ManualClock.start

    func at(_ seconds: Int) -> ManualClock.Instant { self.t0.advanced(by: .seconds(seconds)) }

    // MARK: Heartbeats

    @Test("Total silence: one heartbeat at exactly each interval, and none before")
    func heartbeatsDuringSilence() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: context)
        var consumer = Consumer(events)
        for n in 1...3 {
            let deadline = await self.clock.nextSleeperDeadline()
            #expect(deadline == self.at(15 * n))
            self.clock.advance(to: deadline.advanced(by: .milliseconds(-1)))
            #expect(await self.clock.nextSleeperDeadline() == deadline, "nothing fires before the interval is up")
            self.clock.advance(to: deadline)
            let event = try #require(try await consumer.next())
            #expect(event.kind == .heartbeat)
            #expect(String(buffer: event.bytes) == ": keepalive\n\n")
        }
        #expect(context.record.snapshot.heartbeatsSent == 3)
        upstream.finish()
        #expect(try await consumer.next() == nil)
    }

    @Test("A flood of empty chunks reaches the client as heartbeats at the interval, and nothing else")
    func floodOfEmptyChunks() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: context)
        var consumer = Consumer(events)
        let role = try Wire.role()
        upstream.send([role])
        #expect(try await consumer.next()?.bytes == role.bytes)

        upstream.send(try Array(repeating: Wire.empty(), count: 100))
        #expect(await self.clock.nextSleeperDeadline() == self.at(15))
        self.clock.advance(to: self.at(15))
        #expect(try await consumer.next()?.kind == .heartbeat)

        upstream.send(try Array(repeating: Wire.empty(), count: 100))
        #expect(await self.clock.nextSleeperDeadline() == self.at(30), "the flood does not restart the interval")
        self.clock.advance(to: self.at(30))
        #expect(try await consumer.next()?.kind == .heartbeat)

        let answer = try Wire.content("Hi")
        upstream.send([answer])
        #expect(try await consumer.next()?.bytes == answer.bytes)
        upstream.finish()
        #expect(try await consumer.next() == nil)

        let record = context.record.snapshot
        #expect(record.emptyChunksDropped == 200)
        #expect(record.heartbeatsSent == 2)
    }

    @Test("A flood that is always ready cannot hold back a heartbeat that is due")
    func floodAlwaysReady() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: context)
        let role = try Wire.role()
        let answer = try Wire.content("Hi")
        upstream.send([role] + (try Array(repeating: Wire.empty(), count: 100)) + [answer])
        upstream.finish()
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next()?.bytes == role.bytes)
        // The consumer was busy for the whole interval; the flood is waiting for it.
        self.clock.advance(to: self.at(15))
        #expect(try await iterator.next()?.kind == .heartbeat)
        #expect(try await iterator.next()?.bytes == answer.bytes)
        #expect(try await iterator.next() == nil)
        #expect(context.record.snapshot.emptyChunksDropped == 100)
        #expect(context.record.snapshot.heartbeatsSent == 1)
        #expect(self.clock.sleeperCount == 0, "nothing waited on the clock")
    }

    @Test("Meaningful events pass at once, in order, byte for byte")
    func meaningfulEventsPassThrough() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: context)
        let sent = [
            try Wire.role(),
            try Wire.chunk(#"{"reasoning_content":"Thinking"}"#),
            try Wire.content("Ol\u{e1}"),
            try Wire.chunk(#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#),
            try Wire.chunk("{}", finish: "stop"),
            try Wire.event(#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"# + "\n\n"),
            try Wire.event("event: ping\ndata: {\"unknown\": true}\n\n"),
            try Wire.event("data: [DONE]\n\n"),
        ]
        upstream.send(sent)
        upstream.finish()
        // The clock never moves: nothing waits for a timer.
        let received = try await collect(events)
        #expect(received.map { String(buffer: $0.bytes) } == sent.map { String(buffer: $0.bytes) })
        #expect(received.map(\.kind) == sent.map(\.kind))
        #expect(context.record.snapshot.emptyChunksDropped == 0)
        #expect(context.record.snapshot.heartbeatsSent == 0)
    }

    @Test("Every event sent restarts the interval")
    func eventRestartsInterval() async throws {
        let upstream = ScriptedUpstream()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: makeContext())
        var consumer = Consumer(events)
        #expect(await self.clock.nextSleeperDeadline() == self.at(15))
        self.clock.advance(to: self.at(10))
        let answer = try Wire.content("Hi")
        upstream.send([answer])
        #expect(try await consumer.next()?.bytes == answer.bytes)
        // The stream's one alarm still sleeps until 15: moving a deadline later costs no
        // timer. Waking then, it finds the deadline at 25 and sleeps again, sending nothing.
        self.clock.advance(to: self.at(15))
        #expect(await self.clock.nextSleeperDeadline() == self.at(25))
        self.clock.advance(to: self.at(25))
        #expect(try await consumer.next()?.kind == .heartbeat)
        #expect(await self.clock.nextSleeperDeadline() == self.at(40))
        upstream.finish()
        #expect(try await consumer.next() == nil)
    }

    @Test("The first chunk naming the role is kept, later empty ones are dropped")
    func firstRoleChunkKept() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(clock: self.clock), upstream: upstream, context: context)
        // OpenRouter relaying xAI: role on every delta, empties spelled with nulls.
        let first = try Wire.chunk(#"{"role":"assistant","content":""}"#)
        let emptyWithRole = try Wire.chunk(#"{"role":"assistant","content":"","reasoning":null,"reasoning_details":[]}"#)
        let text = try Wire.chunk(#"{"role":"assistant","content":"Hi"}"#)
        upstream.send([try Wire.empty(), first, emptyWithRole, emptyWithRole, text, emptyWithRole])
        upstream.finish()
        let received = try await collect(events)
        #expect(received.map { String(buffer: $0.bytes) } == [first, text].map { String(buffer: $0.bytes) })
        #expect(context.record.snapshot.emptyChunksDropped == 4)
    }

    @Test("Upstream comment blocks are dropped and counted")
    func commentsDropped() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let events = try await respond(KeepaliveStage(clock: self.clock), upstream: upstream, context: context)
        let comment = try Wire.event(": OPENROUTER PROCESSING\n\n")
        let meaningful = [try Wire.role(), try Wire.content("Hi"), try Wire.event("data: [DONE]\n\n")]
        upstream.send([comment, comment, meaningful[0], comment, meaningful[1], meaningful[2]])
        upstream.finish()
        let received = try await collect(events)
        #expect(received.map { String(buffer: $0.bytes) } == meaningful.map { String(buffer: $0.bytes) })
        #expect(context.record.snapshot.emptyChunksDropped == 3)
    }

    @Test("heartbeat: chunk sends a parseable empty chunk shaped like the stream")
    func chunkHeartbeat() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext(model: "grok-4-fast")
        let stage = KeepaliveStage(interval: .seconds(15), heartbeat: .chunk, clock: self.clock)
        let events = try await respond(stage, upstream: upstream, context: context)
        var consumer = Consumer(events)

        // Before any chunk: made-up id, the model the client asked for.
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        let early = try #require(try await consumer.next())
        #expect(early.kind == .heartbeat)
        let earlyJSON = try json(of: early)
        #expect(earlyJSON["id"] == "chatcmpl-keepalive")
        #expect(earlyJSON["model"] == "grok-4-fast")
        #expect(earlyJSON["object"] == "chat.completion.chunk")
        #expect(earlyJSON["created"]?.intValue != nil)
        #expect(earlyJSON["choices"] == [["index": 0, "delta": [:]]])

        // After one: the stream's own envelope.
        upstream.send([try Wire.role(id: "chatcmpl-42", model: "grok-4-fast-reasoning")])
        #expect(try await consumer.next()?.kind == .chunk)
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        let later = try #require(try await consumer.next())
        #expect(later.kind == .heartbeat)
        let laterJSON = try json(of: later)
        #expect(laterJSON["id"] == "chatcmpl-42")
        #expect(laterJSON["model"] == "grok-4-fast-reasoning")
        #expect(laterJSON["created"] == 1_758_884_701)
        #expect(laterJSON["choices"] == [["index": 0, "delta": [:]]])
        #expect(String(buffer: later.bytes).hasPrefix("data: {"))
        #expect(String(buffer: later.bytes).hasSuffix("}\n\n"))
        upstream.finish()
        #expect(try await consumer.next() == nil)
        #expect(context.record.snapshot.heartbeatsSent == 2)
    }

    // MARK: Before the commit point

    @Test("before_commit: heartbeats while the upstream has not answered, then its stream")
    func beforeCommitHeartbeatsThenStream() async throws {
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let answer = Gate<ChatResponse>()
        let stage = KeepaliveStage(interval: .seconds(15), beforeCommit: true, clock: self.clock)
        let request = try streamingRequest()
        let handled = Task { try await stage.handle(request, context: context) { _, _ in try await answer.wait() } }

        #expect(await self.clock.nextSleeperDeadline() == self.at(15))
        self.clock.advance(to: self.at(15))
        let response = try await handled.value
        #expect(response.status == .ok)
        guard case .events(let events) = response.body else {
            Issue.record("before_commit must answer with a stream")
            return
        }
        var consumer = Consumer(events)
        #expect(try await consumer.next()?.kind == .heartbeat, "the first heartbeat is due at once: it sends the head")
        #expect(await self.clock.nextSleeperDeadline() == self.at(30))
        self.clock.advance(to: self.at(30))
        #expect(try await consumer.next()?.kind == .heartbeat)

        let sent = [try Wire.role(), try Wire.content("Hi"), try Wire.event("data: [DONE]\n\n")]
        answer.open(.success(ChatResponse(status: .ok, body: .events(upstream.events))))
        upstream.send(sent)
        upstream.finish()
        var rest: [StreamEvent] = []
        while let event = try await consumer.next() { rest.append(event) }
        #expect(rest.map { String(buffer: $0.bytes) } == sent.map { String(buffer: $0.bytes) })
        #expect(context.record.snapshot.heartbeatsSent == 2)
    }

    @Test("before_commit: when next throws after the head, one error event ends the stream")
    func beforeCommitNextThrows() async throws {
        let context = makeContext()
        let answer = Gate<ChatResponse>()
        let events = try await self.beforeCommitStream(context: context, answer: answer)
        var consumer = Consumer(events)
        #expect(try await consumer.next()?.kind == .heartbeat)
        answer.open(.failure(RelayError.upstreamTimeout("The upstream did not answer in time.")))
        let event = try #require(try await consumer.next())
        #expect(event.kind == .error)
        let body = try json(of: event)
        #expect(body["error"]?["code"] == "upstream_timeout")
        #expect(body["error"]?["type"] == "upstream_error")
        #expect(body["error"]?["message"] == "The upstream did not answer in time.")
        #expect(try await consumer.next() == nil)
        #expect(context.record.snapshot.error == "The upstream did not answer in time.")
    }

    @Test("before_commit: an error response after the head becomes one error event with the provider's words")
    func beforeCommitErrorResponse() async throws {
        let context = makeContext()
        let answer = Gate<ChatResponse>()
        let events = try await self.beforeCommitStream(context: context, answer: answer)
        var consumer = Consumer(events)
        #expect(try await consumer.next()?.kind == .heartbeat)
        let body = #"{"error":{"message":"Provider returned error","code":429},"user_id":"u1"}"#
        answer.open(.success(ChatResponse(status: .tooManyRequests, body: .whole(ByteBuffer(string: body)))))
        let event = try #require(try await consumer.next())
        #expect(event.kind == .error)
        #expect(try json(of: event) == ["error": ["message": "Provider returned error", "code": 429]])
        #expect(try await consumer.next() == nil)
    }

    @Test("before_commit: an answer within the interval is returned as the upstream gave it")
    func beforeCommitPromptAnswer() async throws {
        let stage = KeepaliveStage(interval: .seconds(15), beforeCommit: true, clock: self.clock)
        let request = try streamingRequest()

        // A clean HTTP error stays a clean HTTP error.
        let refusal = ChatResponse(
            status: .tooManyRequests,
            headerFields: [.retryAfter: "3"],
            body: .whole(ByteBuffer(string: #"{"error":{"message":"slow down"}}"#))
        )
        let refused = try await stage.handle(request, context: makeContext()) { _, _ in refusal }
        #expect(refused.status == .tooManyRequests)
        #expect(refused.headerFields[.retryAfter] == "3")
        guard case .whole(let body) = refused.body else {
            Issue.record("a whole body must stay whole")
            return
        }
        #expect(String(buffer: body) == #"{"error":{"message":"slow down"}}"#)

        // A failure is thrown, for the server to turn into an HTTP error.
        await #expect(throws: RelayError.upstreamUnreachable("down")) {
            _ = try await stage.handle(request, context: makeContext()) { _, _ in throw RelayError.upstreamUnreachable("down") }
        }

        // A stream keeps the upstream's head.
        let upstream = ScriptedUpstream()
        let context = makeContext()
        let streamed = try await stage.handle(request, context: context) { _, _ in
            ChatResponse(status: .ok, headerFields: [HTTPField.Name("x-upstream")!: "a"], body: .events(upstream.events))
        }
        #expect(streamed.headerFields[HTTPField.Name("x-upstream")!] == "a")
        guard case .events(let events) = streamed.body else {
            Issue.record("a stream must stay a stream")
            return
        }
        let sent = [try Wire.role(), try Wire.content("Hi")]
        upstream.send(sent)
        upstream.finish()
        #expect(try await collect(events).map { String(buffer: $0.bytes) } == sent.map { String(buffer: $0.bytes) })
        #expect(context.record.snapshot.heartbeatsSent == 0)
    }

    @Test("Non-streaming responses pass through unchanged, with or without before_commit")
    func wholeResponsesPassThrough() async throws {
        for beforeCommit in [false, true] {
            let stage = KeepaliveStage(interval: .seconds(15), beforeCommit: beforeCommit, clock: self.clock)
            let request = try ChatRequest(body: ByteBuffer(string: #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#))
            let text = #"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#
            let response = try await stage.handle(request, context: makeContext()) { _, _ in
                ChatResponse(status: .ok, headerFields: [.contentType: "application/json"], body: .whole(ByteBuffer(string: text)))
            }
            #expect(response.status == .ok)
            #expect(response.headerFields[.contentType] == "application/json")
            guard case .whole(let body) = response.body else {
                Issue.record("a whole body must stay whole")
                return
            }
            #expect(String(buffer: body) == text)
        }
    }

    // MARK: Cancellation and errors

    @Test("Cancelling the consumer cancels the upstream read at once")
    func consumerCancellationCancelsUpstream() async throws {
        let upstream = ScriptedUpstream()
        let events = try await respond(KeepaliveStage(interval: .seconds(15), clock: self.clock), upstream: upstream, context: makeContext())
        var consumer = Consumer(events)
        _ = await self.clock.nextSleeperDeadline()  // the consumer waits; the pump waits on upstream
        consumer.task.cancel()
        await upstream.cancelled.wait()
        await #expect(throws: CancellationError.self) { _ = try await consumer.next() }
        #expect(self.clock.sleeperCount == 0)
    }

    @Test("Dropping the stream and its iterator cancels the upstream read")
    func droppedIteratorCancelsUpstream() async throws {
        let upstream = ScriptedUpstream()
        do {
            let events = try await respond(KeepaliveStage(clock: self.clock), upstream: upstream, context: makeContext())
            upstream.send([try Wire.role()])
            var iterator = events.makeAsyncIterator()
            #expect(try await iterator.next()?.kind == .chunk)
        }
        await upstream.cancelled.wait()
    }

    @Test("Cancelling the caller while before_commit waits for the head cancels next")
    func beforeCommitCancellation() async throws {
        let answer = Gate<ChatResponse>()
        let stage = KeepaliveStage(interval: .seconds(15), beforeCommit: true, clock: self.clock)
        let request = try streamingRequest()
        let handled = Task { try await stage.handle(request, context: makeContext()) { _, _ in try await answer.wait() } }
        _ = await self.clock.nextSleeperDeadline()
        handled.cancel()
        await answer.cancelled.wait()
        await #expect(throws: CancellationError.self) { _ = try await handled.value }
    }

    @Test("Upstream errors reach the consumer after the events before them")
    func upstreamErrorsSurface() async throws {
        let upstream = ScriptedUpstream()
        let events = try await respond(KeepaliveStage(clock: self.clock), upstream: upstream, context: makeContext())
        var consumer = Consumer(events)
        let sent = [try Wire.role(), try Wire.content("Hi")]
        upstream.send(sent + [try Wire.empty()])
        upstream.finish(throwing: RelayError.upstreamFailed("connection reset"))
        #expect(try await consumer.next()?.bytes == sent[0].bytes)
        #expect(try await consumer.next()?.bytes == sent[1].bytes)
        await #expect(throws: RelayError.upstreamFailed("connection reset")) { _ = try await consumer.next() }
    }

    // MARK: Options and the state machine

    @Test("Options: durations, heartbeat style, before_commit")
    func options() throws {
        let stage = try KeepaliveStage(options: ["interval": "500ms", "heartbeat": "chunk", "before_commit": true])
        #expect(stage.interval == .milliseconds(500))
        #expect(stage.heartbeat == .chunk)
        #expect(stage.beforeCommit)
        #expect(try KeepaliveStage(options: ["interval": 20]).interval == .seconds(20))
        #expect(try KeepaliveStage(options: ["interval": .number(2.5)]).interval == .milliseconds(2500))
        #expect(try KeepaliveStage(options: ["interval": "2m"]).interval == .seconds(120))
        #expect(try KeepaliveStage(options: ["interval": "15s"]).interval == .seconds(15))
        #expect(try KeepaliveStage(options: ["interval": "1h"]).interval == .seconds(3600))
        let defaults = try KeepaliveStage(options: [:])
        #expect(defaults.interval == .seconds(15))
        #expect(defaults.heartbeat == .comment)
        #expect(!defaults.beforeCommit)
    }

    @Test(
        "Bad options name the stage and the option",
        arguments: [
            (["interval": "15x"] as [String: JSONValue], "option 'interval'"),
            (["interval": -1], "option 'interval'"),
            (["interval": "0s"], "option 'interval'"),
            (["interval": true], "option 'interval'"),
            (["heartbeat": "beep"], "option 'heartbeat'"),
            (["before_commit": "yes"], "option 'before_commit'"),
            (["intervall": "15s"], "unknown option(s) intervall"),
        ]
    )
    func badOptions(options: [String: JSONValue], mentions: String) throws {
        let error = try #require(throws: StageConfigurationError.self) { try KeepaliveStage(options: options) }
        #expect(error.description.contains("stage 'keepalive'"))
        #expect(error.description.contains(mentions))
    }

    @Test("The registry knows keepalive and usage, and checks their options")
    func registry() throws {
        let registry = StageRegistry.builtIn
        #expect(registry.names.contains("keepalive"))
        #expect(registry.names.contains("usage"))
        #expect(try registry.makeStage(named: "keepalive", options: ["interval": "5s"]) is KeepaliveStage)
        #expect(try registry.makeStage(named: "usage", options: [:]) is UsageStage)
        let error = try #require(throws: StageConfigurationError.self) {
            try registry.makeStage(named: "usage", options: ["mode": "strict"])
        }
        #expect(error.description.contains("stage 'usage'"))
    }

    @Test("State machine: what is forwarded, what is dropped, when a heartbeat is due")
    func stateMachine() throws {
        var machine = KeepaliveStateMachine(interval: .seconds(15), lastSent: self.t0)
        #expect(machine.timerCheck(at: self.at(14)) == .wait(until: self.at(15)))
        #expect(machine.upstreamEvent(try Wire.empty(), at: self.at(1)) == .dropEmptyChunk)
        #expect(machine.upstreamEvent(try Wire.event(": x\n\n"), at: self.at(2)) == .dropComment)
        #expect(machine.timerCheck(at: self.at(14)) == .wait(until: self.at(15)), "dropped events do not restart the interval")
        #expect(machine.upstreamEvent(try Wire.role(), at: self.at(3)) == .forward)
        #expect(machine.upstreamEvent(try Wire.role(), at: self.at(4)) == .dropEmptyChunk)
        #expect(machine.timerCheck(at: self.at(17)) == .wait(until: self.at(18)), "a forwarded event restarts it")
        #expect(machine.timerCheck(at: self.at(19)) == .sendHeartbeat)
        #expect(machine.timerCheck(at: self.at(19)) == .wait(until: self.at(34)))
        #expect(machine.upstreamEvent(try Wire.content("a"), at: self.at(20)) == .forward)
        #expect(machine.deadline == self.at(35))
        #expect(machine.upstreamEvent(StreamEvent.done, at: self.at(21)) == .forward)
    }

    // MARK: Read-ahead

    @Test("The pump reads at most 16 events ahead of the consumer, then waits until one is taken")
    func readAheadIsBounded() async throws {
        let handOff = KeepaliveHandOff()
        let events = try (1...KeepaliveHandOff.maximumItems).map { try Wire.content("t\($0)") }
        for event in events.dropLast() {
            #expect(await handOff.deliver(.event(event)), "room left: deliver returns at once")
        }
        let returned = Flag()
        let last = Task {
            let accepted = await handOff.deliver(.event(events.last!))
            returned.set()
            return accepted
        }
        try await waitUntil { handOff.isPumpWaiting }
        #expect(!returned.isSet, "the pump waits while 16 events are queued")
        #expect(handOff.queuedItems == KeepaliveHandOff.maximumItems)
        guard case .event(let first)? = handOff.take() else { throw KeepaliveTestFailure("nothing queued") }
        #expect(first.bytes == events[0].bytes, "oldest first")
        #expect(await last.value, "taking one lets the pump read on")
        var taken = 1
        while case .event(let event)? = handOff.take() {
            #expect(event.bytes == events[taken].bytes)
            taken += 1
        }
        #expect(taken == events.count)
    }

    @Test("The pump also waits once 64 KiB of events are queued, and closing lets it go")
    func readAheadBytesAreBounded() async throws {
        let handOff = KeepaliveHandOff()
        let large = try Wire.content(String(repeating: "x", count: KeepaliveHandOff.maximumBytes))
        let returned = Flag()
        let pump = Task {
            let accepted = await handOff.deliver(.event(large))
            returned.set()
            return accepted
        }
        try await waitUntil { handOff.isPumpWaiting }
        #expect(!returned.isSet)
        handOff.close()
        #expect(await pump.value == false, "a closed hand-off tells the pump to stop")
    }

    @Test("On the real clock the alarm (a TimerQueue callback) fires once the latest deadline has passed, never before")
    func realClockAlarm() async throws {
        let clock = ContinuousClock()
        let (fired, signal) = AsyncStream<ContinuousClock.Instant>.makeStream()
        let alarm = KeepaliveAlarm(clock: clock) { signal.yield(clock.now) }
        defer { alarm.stop() }
        let first = clock.now + .milliseconds(30)
        alarm.set(first)
        // Moved later while the first callback is pending: it must not fire at the first.
        let later = first + .milliseconds(150)
        alarm.set(later)
        var iterator = fired.makeAsyncIterator()
        let firedAt = try #require(await iterator.next())
        #expect(firedAt >= later)
    }

    /// On the real clock the alarm is a `TimerQueue` callback (cancelling it keeps nothing),
    /// and the queue's FIFOs are per duration: the remaining time is rounded up to a tenth of
    /// a second so that there are few of them, and never down, so a heartbeat is never early.
    @Test("The real-clock alarm's delay: rounded up to a tenth of a second, never down")
    func alarmSleepRounding() {
        let round = KeepaliveAlarm<ContinuousClock>.roundedUpToTenth
        #expect(round(.zero) == .zero)
        #expect(round(.milliseconds(-5)) == .zero)
        #expect(round(.nanoseconds(1)) == .milliseconds(100))
        #expect(round(.milliseconds(100)) == .milliseconds(100))
        #expect(round(.milliseconds(14_901)) == .seconds(15))
        #expect(round(.seconds(15)) == .seconds(15))
    }

    // MARK: Helpers

    private func beforeCommitStream(context: StageContext, answer: Gate<ChatResponse>) async throws -> EventStream {
        let stage = KeepaliveStage(interval: .seconds(15), beforeCommit: true, clock: self.clock)
        let request = try streamingRequest()
        let handled = Task { try await stage.handle(request, context: context) { _, _ in try await answer.wait() } }
        self.clock.advance(to: await self.clock.nextSleeperDeadline())
        let response = try await handled.value
        #expect(response.status == .ok)
        guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
        return events
    }
}

// MARK: - Test doubles

private struct KeepaliveTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// SSE events as providers write them, decoded the way the gateway decodes upstream bytes.
private enum Wire {
    static func event(_ text: String) throws -> StreamEvent {
        var decoder = SSEDecoder()
        var buffer = ByteBuffer(string: text)
        let frame = try #require(try decoder.decode(buffer: &buffer))
        return StreamEvent(upstream: frame)
    }

    static func chunk(
        _ delta: String,
        finish: String? = nil,
        id: String = "chatcmpl-1",
        model: String = "grok-4-fast-reasoning"
    ) throws -> StreamEvent {
        let finishMember = finish.map { #","finish_reason":"\#($0)""# } ?? ""
        return try self.event(
            #"data: {"id":"\#(id)","object":"chat.completion.chunk","created":1758884701,"model":"\#(model)","#
                + #""choices":[{"index":0,"delta":\#(delta)\#(finishMember)}]}"# + "\n\n"
        )
    }

    static func role(id: String = "chatcmpl-1", model: String = "grok-4-fast-reasoning") throws -> StreamEvent {
        try self.chunk(#"{"role":"assistant"}"#, id: id, model: model)
    }

    static func empty() throws -> StreamEvent { try self.chunk("{}") }

    static func content(_ text: String) throws -> StreamEvent { try self.chunk(#"{"content":"\#(text)"}"#) }
}

/// An upstream event stream the test feeds by hand; it notes when its reader is cancelled.
private final class ScriptedUpstream: Sendable {
    private let stream: AsyncThrowingStream<StreamEvent, any Error>
    private let continuation: AsyncThrowingStream<StreamEvent, any Error>.Continuation
    /// Opens when a read was cancelled.
    let cancelled = Latch()

    init() {
        (self.stream, self.continuation) = AsyncThrowingStream.makeStream()
        self.continuation.onTermination = { [cancelled] reason in
            if case .cancelled = reason { cancelled.open() }
        }
    }

    var events: EventStream { EventStream(self.stream) }

    func send(_ events: [StreamEvent]) {
        for event in events { self.continuation.yield(event) }
    }

    func finish(throwing error: (any Error)? = nil) {
        self.continuation.finish(throwing: error)
    }
}

/// A one-way flag a test can wait for.
private final class Latch: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func open() {
        let waiters = self.state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let isOpen = self.state.withLock { state in
                if !state.open { state.waiters.append(waiter) }
                return state.open
            }
            if isOpen { waiter.resume() }
        }
    }
}

/// A value the test hands to one waiting task (the `next` of a stage), which notes whether
/// it was cancelled while waiting.
private final class Gate<Value: Sendable>: Sendable {
    private let state = Mutex<(result: Result<Value, any Error>?, waiter: CheckedContinuation<Value, any Error>?)>((nil, nil))
    let cancelled = Latch()

    func open(_ result: Result<Value, any Error>) {
        let waiter = self.state.withLock { state in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    func wait() async throws -> Value {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: CheckedContinuation<Value, any Error>) in
                let result = self.state.withLock { state in
                    if state.result == nil { state.waiter = waiter }
                    return state.result
                }
                if let result { waiter.resume(with: result) }
            }
        } onCancel: {
            self.cancelled.open()
            self.open(.failure(CancellationError()))
        }
    }
}

/// Reads a stream on a task of its own, as the server does, and hands the test each event.
private struct Consumer {
    let task: Task<Void, Never>
    private var received: AsyncThrowingStream<StreamEvent, any Error>.Iterator

    init(_ events: EventStream) {
        let (stream, continuation) = AsyncThrowingStream<StreamEvent, any Error>.makeStream()
        self.task = Task {
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
}

private func makeContext(model: String = "grok-4-fast") -> StageContext {
    let record = RequestRecord(UsageRecord(requestID: "req_test", requestedModel: model, upstream: "test", stream: true, caller: nil))
    return StageContext(
        requestID: "req_test",
        requestedModel: model,
        upstreamName: "test",
        logger: Logger(label: "keepalive-tests"),
        record: record
    )
}

private func streamingRequest() throws -> ChatRequest {
    try ChatRequest(body: ByteBuffer(string: #"{"model":"grok-4-fast","stream":true,"messages":[{"role":"user","content":"hi"}]}"#))
}

/// The stage's stream over `upstream`.
private func respond(_ stage: KeepaliveStage, upstream: ScriptedUpstream, context: StageContext) async throws -> EventStream {
    let response = try await stage.handle(try streamingRequest(), context: context) { _, _ in
        ChatResponse(status: .ok, body: .events(upstream.events))
    }
    guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
    return events
}

private func collect(_ events: EventStream) async throws -> [StreamEvent] {
    var received: [StreamEvent] = []
    for try await event in events { received.append(event) }
    return received
}

private func json(of event: StreamEvent) throws -> JSONValue {
    let data = try #require(event.frame.data)
    return try JSONValue(parsing: data.readableBytesView)
}

/// Waits until `condition` holds, checking every millisecond (for states no event announces).
private func waitUntil(_ condition: () -> Bool) async throws {
    while !condition() {
        try await TimerQueue.shared.sleep(for: .milliseconds(1))
    }
}

/// A flag one task sets and another reads.
private final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { self.value.withLock { $0 = true } }
    var isSet: Bool { self.value.withLock { $0 } }
}

// MARK: - Over a stream that waits with deadlines

/// The gateway's upstream bodies wait with deadlines (``DeadlineIterator``): the stage then
/// waits for events in the reader's task, on the daemon's clock, with no pump.
@Suite("Keepalive stage over a stream that waits with deadlines", .timeLimit(.minutes(1)))
struct KeepaliveWaitingTests {
    @Test("Silence until the deadline brings a heartbeat; a flood is dropped; content and the end pass; no plain read")
    func waitsWithDeadlines() async throws {
        let upstream = DeadlineUpstream([
            .event(try Wire.role()),
            .silence,
            .events(try Array(repeating: Wire.empty(), count: 50)),
            .event(try Wire.content("Olá")),
            .end,
        ])
        let context = makeContext()
        // The usage stage between keeps the stream's deadlines.
        let response = try await KeepaliveStage(interval: .milliseconds(20)).handle(try streamingRequest(), context: context) { request, context in
            try await UsageStage().handle(request, context: context) { _, _ in
                ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
            }
        }
        guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
        let received = try await collect(events)
        #expect(received.map(\.kind) == [.chunk, .heartbeat, .chunk])
        #expect(String(buffer: received[2].bytes).contains("Olá"))
        #expect(upstream.plainReads == 0, "the stage read with deadlines only")
        #expect(upstream.deadlineWaits >= 5)
        #expect(context.record.snapshot.heartbeatsSent == 1)
        #expect(context.record.snapshot.emptyChunksDropped == 50)
    }

    @Test("Moderation by patterns alone keeps the stream's deadlines, and the keepalive stage waits on it; an external hook does not")
    func moderationKeepsDeadlines() async throws {
        struct PassingHook: ModerationHook {
            func check(_ input: ModerationHookInput) async throws -> ModerationHookAnswer { .pass }
        }
        let rule = try PatternRule(name: "codename", pattern: .literal("nightingale"), action: .block)
        let patternsOnly = ModerationStage(rules: [rule])
        let withHook = ModerationStage(rules: [rule], hooks: [(ExternalHookSettings(name: "judge", checksInput: false), PassingHook())])
        for (stage, keeps) in [(patternsOnly, true), (withHook, false)] {
            let upstream = DeadlineUpstream([.event(try Wire.role()), .event(try Wire.content("Olá")), .end])
            let response = try await stage.handle(try streamingRequest(), context: makeContext()) { _, _ in
                ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
            }
            guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
            #expect(events.waitsWithDeadlines == keeps)
            guard keeps else { continue }
            let received = try await collect(EventStream(KeepaliveWaitingSequence(
                events: events, start: .now, interval: .seconds(15),
                heartbeat: KeepaliveHeartbeat(style: .comment, requestedModel: "m"), record: makeContext().record
            )))
            #expect(received.count == 2)
            #expect(upstream.plainReads == 0)
        }
    }

    @Test("The shipped pipeline (keepalive, usage, retry) keeps deadlines: retry's held events, then the rest waited on")
    func retryKeepsDeadlines() async throws {
        let upstream = DeadlineUpstream([
            .event(try Wire.role()), .event(try Wire.content("Olá")), .silence, .event(try Wire.content("!")), .end,
        ])
        let context = makeContext()
        let retry = RetryStage()
        let response = try await KeepaliveStage(interval: .milliseconds(20)).handle(try streamingRequest(), context: context) { request, context in
            try await UsageStage().handle(request, context: context) { request, context in
                try await retry.handle(request, context: context) { _, _ in
                    ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
                }
            }
        }
        guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
        let received = try await collect(events)
        #expect(received.map(\.kind) == [.chunk, .chunk, .heartbeat, .chunk])
        #expect(upstream.plainReads == 2, "retry reads up to the first content without a deadline, the rest with one")
        #expect(context.record.snapshot.heartbeatsSent == 1)
    }

    @Test("The fast path (nextIfReady) through keepalive, usage and retry gives what next gives: drops, heartbeat, hidden usage chunk, the end")
    func readyPath() async throws {
        func script() throws -> [DeadlineUpstream.Step] {
            [
                .event(try Wire.role()), .event(try Wire.content("Olá")), .silence,
                .events(try Array(repeating: Wire.empty(), count: 30)), .event(try Wire.content("!")),
                .event(try Wire.event(#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"# + "\n\n")),
                .event(try Wire.event("data: [DONE]\n\n")), .end,
            ]
        }
        /// The stream through the shipped stages; `takingReady` pulls as the relay does.
        func run(takingReady: Bool) async throws -> (events: [StreamEvent], record: UsageRecord, upstream: DeadlineUpstream) {
            let upstream = DeadlineUpstream(try script())
            let context = makeContext()
            let response = try await KeepaliveStage(interval: .milliseconds(100)).handle(try streamingRequest(), context: context) { request, context in
                try await UsageStage().handle(request, context: context) { request, context in
                    try await RetryStage().handle(request, context: context) { _, _ in
                        ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
                    }
                }
            }
            guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
            var iterator = events.makeAsyncIterator()
            #expect(iterator.canBeReady)
            var received: [StreamEvent] = []
            pulling: while let event = try await iterator.next() {
                received.append(event)
                while takingReady {
                    switch try iterator.nextIfReady() {
                    case .element(let event): received.append(event)
                    case .end: break pulling
                    case .deadlinePassed: continue pulling
                    }
                }
            }
            return (received, context.record.snapshot, upstream)
        }
        let plain = try await run(takingReady: false)
        let ready = try await run(takingReady: true)
        #expect(ready.events.map(\.kind) == [.chunk, .chunk, .heartbeat, .chunk, .done])
        #expect(ready.events.map { String(buffer: $0.bytes) } == plain.events.map { String(buffer: $0.bytes) }, "the same events, byte for byte")
        #expect(ready.record.emptyChunksDropped == 30 && plain.record.emptyChunksDropped == 30)
        #expect(ready.record.heartbeatsSent == 1 && plain.record.heartbeatsSent == 1)
        #expect(ready.record.tokens.total == 5 && plain.record.tokens.total == 5)
        #expect(ready.record.eventsReceived == plain.record.eventsReceived)
        #expect(ready.upstream.readyTakes >= 30, "the flood and what followed were taken without waiting")
        #expect(plain.upstream.readyTakes == 0)
    }

    @Test("A stage with no fast path (moderation) turns it off for the stages above it")
    func readyPathOff() async throws {
        let upstream = DeadlineUpstream([.event(try Wire.role()), .event(try Wire.content("Olá")), .end])
        let rule = try PatternRule(name: "codename", pattern: .literal("nightingale"), action: .block)
        let response = try await UsageStage().handle(try streamingRequest(), context: makeContext()) { request, context in
            try await ModerationStage(rules: [rule]).handle(request, context: context) { _, _ in
                ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
            }
        }
        guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
        var iterator = events.makeAsyncIterator()
        #expect(!iterator.canBeReady)
        guard case .deadlinePassed = try iterator.nextIfReady() else {
            Issue.record("an event came through a stage with no fast path")
            return
        }
        #expect(try await iterator.next()?.kind == .chunk)
    }

    @Test("An error from beneath ends the stream with that error")
    func errorFromBeneath() async throws {
        let upstream = DeadlineUpstream([.event(try Wire.role()), .fail])
        let response = try await KeepaliveStage(interval: .seconds(15)).handle(try streamingRequest(), context: makeContext()) { _, _ in
            ChatResponse(status: .ok, body: .events(EventStream(upstream, waitsWithDeadlines: true)))
        }
        guard case .events(let events) = response.body else { throw KeepaliveTestFailure("no stream") }
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next()?.kind == .chunk)
        await #expect(throws: KeepaliveTestFailure.self) { try await iterator.next() }
        #expect(try await iterator.next() == nil, "nothing after the error")
    }
}

/// An upstream stream that waits with deadlines, following a script; `silence` lasts until
/// the reader's deadline (the upstream sends nothing meanwhile).
private final class DeadlineUpstream: AsyncSequence, Sendable {
    typealias Element = StreamEvent

    enum Step: Sendable {
        case event(StreamEvent)
        case events([StreamEvent])
        case silence
        case end
        case fail
    }

    private let state: Mutex<(steps: [StreamEvent?], silences: Set<Int>, failAt: Int?, position: Int, plainReads: Int, deadlineWaits: Int, readyTakes: Int)>

    init(_ steps: [Step]) {
        var flat: [StreamEvent?] = []
        var silences: Set<Int> = []
        var failAt: Int?
        for step in steps {
            switch step {
            case .event(let event): flat.append(event)
            case .events(let events): flat.append(contentsOf: events)
            case .silence: silences.insert(flat.count)
            case .end: flat.append(nil)
            case .fail: failAt = flat.count
            }
        }
        self.state = Mutex((flat, silences, failAt, 0, 0, 0, 0))
    }

    var plainReads: Int { self.state.withLock { $0.plainReads } }
    var deadlineWaits: Int { self.state.withLock { $0.deadlineWaits } }
    /// Events (and ends) handed over by the fast path.
    var readyTakes: Int { self.state.withLock { $0.readyTakes } }

    func makeAsyncIterator() -> Iterator { Iterator(upstream: self) }

    struct Iterator: DeadlineIterator {
        let upstream: DeadlineUpstream

        /// A read with no deadline waits out a silence.
        mutating func next() async throws -> StreamEvent? {
            let step = self.upstream.state.withLock { state -> StreamEvent?? in
                state.plainReads += 1
                state.silences.remove(state.position)
                if state.failAt == state.position { return .none }
                defer { state.position += 1 }
                return .some(state.steps[state.position])
            }
            guard let step else { throw KeepaliveTestFailure("upstream failed") }
            return step
        }

        nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
            enum Answer { case silence, fail, step(StreamEvent?) }
            let answer = self.upstream.state.withLock { state -> Answer in
                state.deadlineWaits += 1
                if state.silences.remove(state.position) != nil { return .silence }
                if state.failAt == state.position { return .fail }
                defer { state.position += 1 }
                return .step(state.steps[state.position])
            }
            switch answer {
            case .silence:
                try await Task.sleep(until: deadline)
                return .deadlinePassed
            case .fail:
                throw KeepaliveTestFailure("upstream failed")
            case .step(let event?):
                return .element(event)
            case .step(nil):
                return .end
            }
        }

        var canBeReady: Bool { true }

        /// Every step but a silence is ready.
        mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
            let answer = self.upstream.state.withLock { state -> NextBeforeDeadline<StreamEvent>? in
                if state.silences.contains(state.position) { return .deadlinePassed }
                if state.failAt == state.position { return nil }
                state.readyTakes += 1
                defer { state.position += 1 }
                return state.steps[state.position].map { .element($0) } ?? .end
            }
            guard let answer else { throw KeepaliveTestFailure("upstream failed") }
            return answer
        }
    }
}
