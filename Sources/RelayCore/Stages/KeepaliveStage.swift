import Foundation
import HTTPTypes
import NIOCore

/// Stage `keepalive`: the client hears a heartbeat at a fixed interval and nothing else
/// that carries no meaning, whatever the upstream does (floods of empty chunks, minutes of
/// silence).
///
/// - Holds back: nothing that carries meaning; it never delays a meaningful event. It
///   drops chunks that carry nothing (`delta:{}`, `content:""` with nulls; xAI sends one
///   per hidden reasoning token) except the first chunk naming the role, and upstream
///   comment blocks (`: OPENROUTER PROCESSING`). Both are counted in
///   ``UsageRecord/emptyChunksDropped``.
/// - Commits: it does not decide the commit point; meaningful events pass through at
///   once, in order, byte for byte. Its heartbeats do not commit (but they do make the
///   server send the response head).
/// - On silence: one heartbeat whenever nothing has been sent to the client for
///   `interval`: `: keepalive` by default, or with `heartbeat: chunk` an empty
///   `chat.completion.chunk` (`choices:[{"index":0,"delta":{}}]`) for clients that cannot
///   bear comments. The interval restarts after every event sent. Counted in
///   ``UsageRecord/heartbeatsSent``.
/// - With `before_commit: true`, heartbeats start before the upstream has answered: once
///   `interval` passes without `next` returning, the stage answers 200 with an event
///   stream of heartbeats, continued by the upstream's events when they come, or ended by
///   one error event when `next` fails or answers with an error. The upstream's response
///   headers are lost in that case. Without the option the response head is the
///   upstream's own.
///
/// Non-streaming responses pass through unchanged. A stream that can wait with a deadline
/// (``EventStream/waitsWithDeadlines``: a live upstream's, through stages that keep it) is
/// read in the client's own task, each wait for an event ending when the next heartbeat is
/// due. Any other stream (a cassette's, one under a manual clock in tests, or with
/// `before_commit`) is read by a task of its own, at most 16 events (64 KiB) ahead, so
/// that a heartbeat timer never cancels an upstream read; cancelling or dropping the
/// consumer cancels that task, and the upstream read, at once.
///
/// Options: `interval` (duration, default 15s), `heartbeat` (`comment` | `chunk`),
/// `before_commit` (bool, default false).
public struct KeepaliveStage: StreamStage {
    /// How a heartbeat looks on the wire.
    public enum HeartbeatStyle: String, Sendable, CaseIterable {
        /// `: keepalive`, an SSE comment every client must ignore.
        case comment
        /// An empty `chat.completion.chunk`, for clients that choke on comments.
        case chunk
    }

    /// The interval when the config names none.
    public static let defaultInterval: Duration = .seconds(15)

    /// The longest the client goes without an event.
    public let interval: Duration
    public let heartbeat: HeartbeatStyle
    /// Whether heartbeats start before the upstream has answered.
    public let beforeCommit: Bool
    private let clock: any Clock<Duration>

    /// - Parameter clock: what measures the interval (tests pass a manual clock).
    public init(
        interval: Duration = Self.defaultInterval,
        heartbeat: HeartbeatStyle = .comment,
        beforeCommit: Bool = false,
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        precondition(interval > .zero, "a keepalive interval must be longer than zero")
        self.interval = interval
        self.heartbeat = heartbeat
        self.beforeCommit = beforeCommit
        self.clock = clock
    }

    /// Builds the stage from its config options; throws ``StageConfigurationError``.
    public init(options: [String: JSONValue]) throws {
        var reader = StageOptions(options, stage: "keepalive")
        let interval = try reader.duration("interval", default: Self.defaultInterval)
        guard interval > .zero else { throw reader.error("interval", "must be longer than zero") }
        let style = try reader.choice("heartbeat", of: HeartbeatStyle.allCases.map(\.rawValue), default: HeartbeatStyle.comment.rawValue)
        let beforeCommit = try reader.bool("before_commit", default: false)
        try reader.finish()
        self.init(interval: interval, heartbeat: HeartbeatStyle(rawValue: style)!, beforeCommit: beforeCommit)
    }

    public func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        // The daemon's clock by name, so that the relay is compiled for it: opened from the
        // existential, every event's timer check looked generic metadata up (2% of a
        // relayed chunk's instructions in callgrind).
        if let clock = self.clock as? ContinuousClock {
            return try await self.relay(request, context: context, next: next, clock: clock)
        }
        return try await self.relay(request, context: context, next: next, clock: self.clock)
    }

    private func relay<C: Clock<Duration>>(
        _ request: ChatRequest,
        context: StageContext,
        next: @escaping ChatHandler,
        clock: C
    ) async throws -> ChatResponse {
        if self.beforeCommit, request.stream {
            return try await self.relayBeforeCommit(request, context: context, next: next, clock: clock)
        }
        let response = try await next(request, context)
        guard case .events(let events) = response.body else { return response }
        if events.waitsWithDeadlines, let start = clock.now as? ContinuousClock.Instant {
            // The stream beneath waits with deadlines: the client's task reads it directly.
            let stream = KeepaliveWaitingSequence(
                events: events,
                start: start,
                interval: self.interval,
                heartbeat: KeepaliveHeartbeat(style: self.heartbeat, requestedModel: context.requestedModel),
                record: context.record
            )
            return ChatResponse(status: response.status, headerFields: response.headerFields, body: .events(EventStream(stream)))
        }
        let handOff = KeepaliveHandOff()
        let session = KeepaliveSession(handOff: handOff) {
            await KeepalivePump.run(head: nil, events: events, into: handOff)
        }
        let stream = self.stream(session: session, context: context, clock: clock, start: clock.now, headPending: false)
        return ChatResponse(status: response.status, headerFields: response.headerFields, body: .events(stream))
    }

    /// Calls `next` inside the pump and waits for its answer no longer than `interval`.
    private func relayBeforeCommit<C: Clock<Duration>>(
        _ request: ChatRequest,
        context: StageContext,
        next: @escaping ChatHandler,
        clock: C
    ) async throws -> ChatResponse {
        let start = clock.now
        let handOff = KeepaliveHandOff()
        let session = KeepaliveSession(handOff: handOff) {
            await KeepalivePump.run(head: { try await next(request, context) }, events: nil, into: handOff)
        }
        session.startPump()
        let deadline = start.advanced(by: self.interval)
        while true {
            switch handOff.take() {
            case .head(let response)?:
                guard case .events = response.body else { return response }
                let stream = self.stream(session: session, context: context, clock: clock, start: start, headPending: false)
                return ChatResponse(status: response.status, headerFields: response.headerFields, body: .events(stream))
            case .failure(let error)?:
                throw error
            case .event?, .end?:
                preconditionFailure("the keepalive pump delivers the head first")
            case nil:
                break
            }
            if Task.isCancelled {
                handOff.close()
                throw CancellationError()
            }
            if clock.now >= deadline {
                // The stream's first heartbeat is due at once: it sends the head.
                let stream = self.stream(session: session, context: context, clock: clock, start: start, headPending: true)
                return ChatResponse(status: .ok, body: .events(stream))
            }
            await handOff.wait(until: deadline, on: clock)
        }
    }

    private func stream<C: Clock<Duration>>(
        session: KeepaliveSession,
        context: StageContext,
        clock: C,
        start: C.Instant,
        headPending: Bool
    ) -> EventStream {
        EventStream(
            KeepaliveEventSequence(
                session: session,
                clock: clock,
                start: start,
                interval: self.interval,
                heartbeat: KeepaliveHeartbeat(style: self.heartbeat, requestedModel: context.requestedModel),
                record: context.record,
                headPending: headPending
            )
        )
    }
}

/// The keepalive stage's view of a response stream: upstream events filtered, with
/// heartbeats in the silences. Single-pass: it reads through one shared hand-off.
struct KeepaliveEventSequence<C: Clock<Duration>>: AsyncSequence, Sendable {
    typealias Element = StreamEvent

    let session: KeepaliveSession
    let clock: C
    let start: C.Instant
    let interval: Duration
    let heartbeat: KeepaliveHeartbeat
    let record: RequestRecord
    /// Whether the stage answered before `next` did, so that the pump's first item is its head.
    let headPending: Bool

    func makeAsyncIterator() -> Iterator {
        Iterator(
            session: self.session,
            lifetime: KeepaliveIteratorLifetime(self.session.handOff),
            clock: self.clock,
            machine: KeepaliveStateMachine(interval: self.interval, lastSent: self.start),
            heartbeat: self.heartbeat,
            record: self.record,
            headPending: self.headPending
        )
    }

    struct Iterator: AsyncIteratorProtocol {
        let session: KeepaliveSession
        /// Closes the hand-off when the iterator is dropped, even if the stream lives on.
        let lifetime: KeepaliveIteratorLifetime
        let clock: C
        var machine: KeepaliveStateMachine<C.Instant>
        var heartbeat: KeepaliveHeartbeat
        let record: RequestRecord
        var headPending: Bool
        var finished = false

        mutating func next() async throws -> StreamEvent? {
            guard !self.finished else { return nil }
            guard !Task.isCancelled else { throw self.cancel() }
            let handOff = self.session.handOff
            self.session.startPump()
            while true {
                let item = handOff.take()
                if let item {
                    if let event = try self.receive(item) { return event }
                    if self.finished { return nil }
                } else if handOff.isClosed {
                    throw self.cancel()
                }
                // Checked after every dropped event too: a flood that is always ready must
                // not hold back a heartbeat that is due.
                switch self.machine.timerCheck(at: self.clock.now) {
                case .sendHeartbeat:
                    self.record.update { $0.heartbeatsSent += 1 }
                    return self.heartbeat.event()
                case .wait(let deadline):
                    guard item == nil else { continue }
                    await handOff.wait(until: deadline, on: self.clock)
                    guard !Task.isCancelled else { throw self.cancel() }
                }
            }
        }

        /// Returns the event to send for `item`, or nil to read on (or to end, when `finished`).
        private mutating func receive(_ item: KeepaliveUpstreamItem) throws -> StreamEvent? {
            switch item {
            case .event(let event):
                let forwarded = keepaliveForwards(
                    event, at: self.clock.now, machine: &self.machine, heartbeat: &self.heartbeat, record: self.record
                )
                return forwarded ? event : nil
            case .end:
                self.finish()
                return nil
            case .failure(let error):
                self.finish()
                guard self.headPending, !(error is CancellationError) else { throw error }
                // The head went out already: say what went wrong in the stream.
                return self.errorEvent((error as? RelayError) ?? .upstreamFailed("The upstream request failed."))
            case .head(let response):
                self.headPending = false
                if response.status.kind == .successful, case .events = response.body { return nil }
                self.finish()
                return self.errorEvent(for: response)
            }
        }

        private mutating func finish() {
            self.finished = true
            self.session.handOff.close()
        }

        private mutating func cancel() -> CancellationError {
            self.finish()
            return CancellationError()
        }

        /// The error event for an upstream answer that came after the relay's own head.
        private func errorEvent(for response: ChatResponse) -> StreamEvent {
            if case .whole(let body) = response.body, let json = try? JSONValue(parsing: body.readableBytesView),
                let error = json["error"], error.objectValue != nil
            {
                // The provider's own words (an OpenRouter 429 says which upstream was limited).
                self.record.update { $0.error = $0.error ?? error["message"]?.stringValue ?? "upstream HTTP \(response.status.code)" }
                return StreamEvent.data(["error": error], kind: .error)
            }
            if response.status.kind == .successful {
                return self.errorEvent(.upstreamFailed("The upstream answered with a whole response instead of an event stream."))
            }
            return self.errorEvent(.upstreamFailed("The upstream answered HTTP \(response.status.code)."))
        }

        private func errorEvent(_ error: RelayError) -> StreamEvent {
            self.record.update { $0.error = $0.error ?? error.message }
            let json = (try? JSONValue(parsing: error.jsonBody.readableBytesView)) ?? ["error": ["message": .string(error.message)]]
            return StreamEvent.data(json, kind: .error)
        }
    }
}

/// The keepalive stage's view of a stream that waits with deadlines (the upstream's, as the
/// gateway reads it): the client's task waits for the next upstream event until the next
/// heartbeat is due, with no pump task and no hand-off. Same rules as
/// ``KeepaliveEventSequence``, on the daemon's clock.
struct KeepaliveWaitingSequence: AsyncSequence, Sendable {
    typealias Element = StreamEvent

    let events: EventStream
    let start: ContinuousClock.Instant
    let interval: Duration
    let heartbeat: KeepaliveHeartbeat
    let record: RequestRecord

    func makeAsyncIterator() -> Iterator {
        Iterator(
            upstream: self.events.makeAsyncIterator(),
            machine: KeepaliveStateMachine(interval: self.interval, lastSent: self.start),
            heartbeat: self.heartbeat,
            record: self.record
        )
    }

    struct Iterator: ReadyIterator {
        var upstream: EventStream.Iterator
        var machine: KeepaliveStateMachine<ContinuousClock.Instant>
        var heartbeat: KeepaliveHeartbeat
        let record: RequestRecord
        var finished = false
        /// An event went to the client and the clock has not been read since.
        ///
        /// The interval counts from the first reading after it, not from the event itself:
        /// that reading comes before the next wait or at the next dropped event, so within the
        /// round that sent it, microseconds later. Reading the clock for every forwarded
        /// event, as this did, was two readings an event with the upstream's (3% of an
        /// event's instructions, 1.6% of the relay's CPU in perf).
        var sentSinceReading = false

        /// The clock, read; a send not yet stamped counts from now.
        private mutating func now() -> ContinuousClock.Instant {
            let now = ContinuousClock.now
            if self.sentSinceReading {
                self.machine.sent(at: now)
                self.sentSinceReading = false
            }
            return now
        }

        mutating func next() async throws -> StreamEvent? {
            guard !self.finished else { return nil }
            guard !Task.isCancelled else {
                self.finished = true
                throw CancellationError()
            }
            do {
                while true {
                    // Checked after every dropped event too: a flood that is always ready
                    // must not hold back a heartbeat that is due.
                    switch self.machine.timerCheck(at: self.now()) {
                    case .sendHeartbeat:
                        self.record.update { $0.heartbeatsSent += 1 }
                        return self.heartbeat.event()
                    case .wait(let deadline):
                        switch try await self.upstream.next(before: deadline) {
                        case .element(let event):
                            if self.forwards(event) { return event }
                        case .end:
                            self.finished = true
                            return nil
                        case .deadlinePassed:
                            continue
                        }
                    }
                }
            } catch {
                self.finished = true
                throw error
            }
        }

        var canBeReady: Bool { self.upstream.canBeReady }

        /// What ``next()`` would return with nothing to wait for: the next upstream event
        /// that goes on if the upstream has it ready, or a heartbeat that came due during a
        /// flood of dropped ones. (One due before that waits for ``next()``: the caller ends
        /// its round when nothing is ready, and asks there first.)
        mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
            guard !self.finished else { return .end }
            do {
                while true {
                    switch try self.upstream.nextIfReady() {
                    case .element(let event):
                        if self.forwards(event) { return .element(event) }
                        if case .sendHeartbeat = self.machine.timerCheck(at: self.now()) {
                            self.record.update { $0.heartbeatsSent += 1 }
                            return .element(self.heartbeat.event())
                        }
                    case .end:
                        self.finished = true
                        return .end
                    case .deadlinePassed:
                        return .deadlinePassed
                    }
                }
            } catch {
                self.finished = true
                throw error
            }
        }

        /// Whether an upstream event goes to the client; one that does is sent as far as the
        /// interval goes (stamped at the next reading of the clock).
        private mutating func forwards(_ event: StreamEvent) -> Bool {
            self.heartbeat.observe(event)
            switch self.machine.classify(event) {
            case .forward:
                self.sentSinceReading = true
                return true
            case .dropEmptyChunk, .dropComment:
                self.record.update { $0.emptyChunksDropped += 1 }
                return false
            }
        }
    }
}

/// Whether an upstream event arriving at `now` goes to the client, for the stage's view with
/// a pump (the waiting view's `forwards` does the same and stamps the send later): the
/// heartbeat remembers a chunk's envelope, the record counts what is dropped.
private func keepaliveForwards<Instant>(
    _ event: StreamEvent,
    at now: Instant,
    machine: inout KeepaliveStateMachine<Instant>,
    heartbeat: inout KeepaliveHeartbeat,
    record: RequestRecord
) -> Bool {
    heartbeat.observe(event)
    switch machine.upstreamEvent(event, at: now) {
    case .forward:
        return true
    case .dropEmptyChunk, .dropComment:
        record.update { $0.emptyChunksDropped += 1 }
        return false
    }
}

/// Makes heartbeat events, shaped like the stream they go into.
struct KeepaliveHeartbeat: Sendable {
    let style: KeepaliveStage.HeartbeatStyle
    let requestedModel: String
    private var id: String?
    private var created: Int?
    private var model: String?
    /// The facts last looked at: the chunks that match a template share their box (see
    /// ``ChunkTemplate``), and the envelope in it is the same.
    private var observed: ChunkFactsStorage?

    init(style: KeepaliveStage.HeartbeatStyle, requestedModel: String) {
        self.style = style
        self.requestedModel = requestedModel
    }

    /// Remembers the envelope of the latest chunk, for chunk heartbeats.
    mutating func observe(_ event: StreamEvent) {
        // Most chunks share the box of the one before: nothing to look at (reading the
        // facts out of it copied them, six references, for every event).
        guard let box = event.factsBox, box !== self.observed else { return }
        self.observed = box
        self.observe(box.facts)
    }

    /// Remembers the envelope of `facts`.
    private mutating func observe(_ facts: borrowing ChunkFacts) {
        // Compared first: a stream repeats them, and assigning retains and releases.
        if let id = facts.id, !id.isEmpty, id != self.id { self.id = id }
        if let created = facts.created, created > 0 { self.created = created }
        if let model = facts.model, !model.isEmpty, model != self.model { self.model = model }
    }

    func event() -> StreamEvent {
        switch self.style {
        case .comment:
            return .commentHeartbeat()
        case .chunk:
            let chunk: JSONValue = [
                "id": .string(self.id ?? "chatcmpl-keepalive"),
                "object": "chat.completion.chunk",
                "created": .number(Double(self.created ?? Int(Date().timeIntervalSince1970))),
                "model": .string(self.model ?? self.requestedModel),
                "choices": [["index": 0, "delta": [:]]],
            ]
            return .data(chunk, kind: .heartbeat)
        }
    }
}
