public import HTTPTypes
public import NIOCore

/// What a stage gets back from `next`: the response head and either a whole body or a
/// lazy stream of events.
///
/// The stream is pulled by whoever is after this stage: the client's socket pulls the last
/// stage, which pulls the one before, down to the upstream body. Nothing is read from
/// upstream before the client is ready for it.
public struct ChatResponse: Sendable {
    /// The response body.
    public enum Body: Sendable {
        /// A non-streaming response (or an upstream error), read whole.
        case whole(ByteBuffer)
        /// A server-sent-event stream.
        case events(EventStream)
    }

    public var status: HTTPResponse.Status
    /// Headers for the client (hop-by-hop and framing headers are not included).
    public var headerFields: HTTPFields
    public var body: Body

    public init(status: HTTPResponse.Status, headerFields: HTTPFields = [:], body: Body) {
        self.status = status
        self.headerFields = headerFields
        self.body = body
    }

    /// A response that ends the request with `error` (before the commit point).
    public init(error: RelayError) {
        var headers = error.headers
        headers[.contentType] = "application/json"
        self.init(status: error.status, headerFields: headers, body: .whole(error.jsonBody))
    }
}

/// A type-erased, pull-based stream of ``StreamEvent``s; what stages wrap.
public struct EventStream: AsyncSequence, Sendable {
    public typealias Element = StreamEvent
    private let makeIterator: @Sendable () -> Iterator
    /// Whether its iterators can wait with a deadline (``Iterator/next(before:)``): every
    /// layer beneath, down to the upstream body, can. The keepalive stage then waits for
    /// events itself instead of reading them in a task of its own.
    public let waitsWithDeadlines: Bool

    /// Wraps any sendable sequence of events.
    public init<Base: AsyncSequence & Sendable>(_ base: Base) where Base.Element == StreamEvent {
        self.makeIterator = {
            let box = IteratorBox(base.makeAsyncIterator())
            return Iterator(nextEvent: { try await box.next() }, nextEventBefore: nil, nextEventIfReady: nil)
        }
        self.waitsWithDeadlines = false
    }

    /// Wraps a sequence whose iterator can hand over what it has ready
    /// (``Iterator/nextIfReady()``).
    public init<Base: AsyncSequence & Sendable>(_ base: Base) where Base.Element == StreamEvent, Base.AsyncIterator: ReadyIterator {
        self.makeIterator = {
            let box = IteratorBox(base.makeAsyncIterator())
            return Iterator(nextEvent: { try await box.next() }, nextEventBefore: nil, nextEventIfReady: box.readyPath)
        }
        self.waitsWithDeadlines = false
    }

    /// Wraps a sequence whose iterator can wait with deadlines; `waitsWithDeadlines` false
    /// when it can only if what it wraps can (a stage's view of an ``EventStream``), and
    /// that cannot.
    public init<Base: AsyncSequence & Sendable>(_ base: Base, waitsWithDeadlines: Bool)
    where Base.Element == StreamEvent, Base.AsyncIterator: DeadlineIterator {
        guard waitsWithDeadlines else {
            self = EventStream(base)
            return
        }
        self.makeIterator = {
            let box = IteratorBox(base.makeAsyncIterator())
            return Iterator(
                nextEvent: { try await box.next() },
                nextEventBefore: { try await box.next(before: $0) },
                nextEventIfReady: box.readyPath
            )
        }
        self.waitsWithDeadlines = true
    }

    /// A stream of the given events (for tests and relay-made responses).
    public init(_ events: [StreamEvent]) {
        self.init(EventListSequence(events: events))
    }

    public func makeAsyncIterator() -> Iterator { self.makeIterator() }

    /// Pulls the next event; nil at the end of the stream.
    public struct Iterator: ReadyIterator {
        let nextEvent: () async throws -> StreamEvent?
        let nextEventBefore: (nonisolated(nonsending) (ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent>)?
        let nextEventIfReady: (() throws -> NextBeforeDeadline<StreamEvent>)?

        public mutating func next() async throws -> StreamEvent? { try await self.nextEvent() }

        /// The next event, or `.deadlinePassed` when `deadline` comes first; only for a
        /// stream that ``EventStream/waitsWithDeadlines``.
        nonisolated(nonsending) public mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
            guard let nextEventBefore = self.nextEventBefore else {
                preconditionFailure("next(before:) on an event stream that does not wait with deadlines")
            }
            return try await nextEventBefore(deadline)
        }

        /// The next event if the layers beneath have it ready (`.deadlinePassed` if not,
        /// or if one of them cannot tell).
        public mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
            guard let nextEventIfReady = self.nextEventIfReady else { return .deadlinePassed }
            return try nextEventIfReady()
        }

        public var canBeReady: Bool { self.nextEventIfReady != nil }
    }
}

/// Holds a stage's iterator for the type-erased stream. One consumer pulls it, one call at a
/// time, so the runtime's exclusivity check on `base` (an access that spans the `await`,
/// tracked per event and per stage: 3% of a relayed chunk's CPU in perf) is left out.
private final class IteratorBox<Base: AsyncIteratorProtocol> where Base.Element == StreamEvent {
    @exclusivity(unchecked) var base: Base
    init(_ base: Base) { self.base = base }
    func next() async throws -> StreamEvent? { try await self.base.next(isolation: #isolation) }
}

extension IteratorBox where Base: ReadyIterator {
    /// The fast path to `base`, if it has one.
    var readyPath: (() throws -> NextBeforeDeadline<StreamEvent>)? {
        self.base.canBeReady ? { try self.base.nextIfReady() } : nil
    }
}

extension IteratorBox where Base: DeadlineIterator {
    nonisolated(nonsending) func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
        try await self.base.next(before: deadline)
    }
}

private struct EventListSequence: AsyncSequence, Sendable {
    typealias Element = StreamEvent
    let events: [StreamEvent]
    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<StreamEvent>
        mutating func next() async throws -> StreamEvent? { self.remaining.popFirst() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.events[...]) }
}
