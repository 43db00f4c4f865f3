import Foundation
import HTTPTypes
import Logging
import NIOCore

/// Stage `retry`: hides the upstream failures that can be hidden, and never sends the
/// client the same output twice.
///
/// - Holds back: every event of an attempt until the first one that ``StreamEvent/commits``
///   (at most `max_held_bytes`); the stage returns only then, so nothing of a failed
///   attempt ever reaches the client.
/// - Commits: when an attempt's first content event arrives (or its held events pass the
///   bound). After that it never retries: a later failure ends the stream with one error
///   event (the server writes it).
/// - On silence: emits nothing itself; put `keepalive` with `before_commit: true` outside
///   it to keep the client's connection alive while attempts and waits happen behind.
///
/// Retries on connection failures and timeouts before the head, on the statuses in
/// `retry_on`, and on a stream that fails or ends before its first content. Waits with
/// exponential backoff and full jitter, or as long as the upstream asks when that is no
/// more than `max_retry_after`; gives up early, with the upstream's own error, when a wait
/// would pass the request's `deadline`. When `attempts` are spent on one target, the
/// model's fallbacks are tried in order under the same rules. A client that hangs up
/// during a wait ends it at once.
public struct RetryStage: StreamStage {
    public var attempts: Int
    public var deadline: Duration
    public var retryOn: Set<Int>
    public var backoff: RetryBackoff
    public var maximumHeldBytes: Int
    let clock: any Clock<Duration>

    public static let defaultRetryStatuses: Set<Int> = [408, 409, 429, 500, 502, 503, 504]

    public init(
        attempts: Int = 3,
        deadline: Duration = .seconds(60),
        retryOn: Set<Int> = RetryStage.defaultRetryStatuses,
        backoff: RetryBackoff = RetryBackoff(),
        maximumHeldBytes: Int = 1 << 20,
        clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.attempts = max(1, attempts)
        self.deadline = deadline
        self.retryOn = retryOn
        self.backoff = backoff
        self.maximumHeldBytes = maximumHeldBytes
        self.clock = clock
    }

    /// Builds the stage from its config options.
    public init(options: [String: JSONValue]) throws {
        var reader = StageOptions(options, stage: "retry")
        let defaults = RetryStage()
        var attempts = defaults.attempts
        if let value = reader.take("attempts") {
            guard let count = value.intValue, count >= 1, count <= 20 else { throw reader.error("attempts", "must be a whole number from 1 to 20") }
            attempts = count
        }
        var retryOn = defaults.retryOn
        if let value = reader.take("retry_on") {
            guard let list = value.arrayValue, let codes = Optional(list.compactMap(\.intValue)), codes.count == list.count,
                codes.allSatisfy({ (400...599).contains($0) })
            else { throw reader.error("retry_on", "must be a list of HTTP status codes from 400 to 599") }
            retryOn = Set(codes)
        }
        let deadline = try reader.duration("deadline", default: defaults.deadline)
        let backoff = RetryBackoff(
            base: try reader.duration("base_delay", default: defaults.backoff.base),
            cap: try reader.duration("max_delay", default: defaults.backoff.cap),
            maximumRetryAfter: try reader.duration("max_retry_after", default: defaults.backoff.maximumRetryAfter)
        )
        var held = defaults.maximumHeldBytes
        if let value = reader.take("max_held_bytes") {
            guard let bytes = value.intValue, bytes > 0 else { throw reader.error("max_held_bytes", "must be a positive number of bytes") }
            held = bytes
        }
        try reader.finish()
        self.init(attempts: attempts, deadline: deadline, retryOn: retryOn, backoff: backoff, maximumHeldBytes: held)
    }

    /// Why an attempt did not produce a response worth committing to.
    enum Failure {
        case response(ChatResponse)
        case error(any Error)

        func returnOrThrow() throws -> ChatResponse {
            switch self {
            case .response(let response): return response
            case .error(let error): throw error
            }
        }
    }

    enum Outcome {
        case success(ChatResponse)
        case retryable(Failure, asked: Duration?)
        case final(Failure)
    }

    public func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        let elapsed = Self.stopwatch(self.clock)
        let primary = RouteTarget(upstream: context.upstreamName, model: request.upstreamModel ?? request.model)
        var random = SystemRandomNumberGenerator()
        var lastFailure: Failure?
        for target in [primary] + context.fallbacks {
            var attemptContext = context
            attemptContext.upstreamName = target.upstream
            attemptContext.logger[metadataKey: "upstream"] = .string(target.upstream)
            var attemptRequest = request
            attemptRequest.setUpstreamModel(target.model)
            context.record.update { $0.upstream = target.upstream }
            if target != primary {
                context.logger.notice("falling back", metadata: ["fallback": .string(target.description)])
            }
            for attempt in 0..<self.attempts {
                try Task.checkCancellation()
                switch try await self.attempt(attemptRequest, context: attemptContext, next: next) {
                case .success(let response):
                    return response
                case .final(let failure):
                    return try failure.returnOrThrow()
                case .retryable(let failure, let asked):
                    lastFailure = failure
                    guard attempt + 1 < self.attempts else { break }
                    switch self.backoff.decision(afterAttempt: attempt, upstreamAsked: asked, random: &random) {
                    case .giveUp(let asked):
                        context.logger.notice("upstream asks to wait \(asked), longer than max_retry_after; not retrying it")
                        return try failure.returnOrThrow()
                    case .wait(let wait):
                        guard elapsed() + wait < self.deadline else {
                            context.logger.notice("the next retry would pass the request's deadline; giving up")
                            return try failure.returnOrThrow()
                        }
                        context.logger.info(
                            "retrying after a failed attempt",
                            metadata: ["attempt": "\(attempt + 1)", "wait_ms": "\(RetryBackoff.nanoseconds(wait) / 1_000_000)"]
                        )
                        try await self.clock.sleep(for: wait)
                    }
                }
            }
        }
        return try (lastFailure ?? .error(RelayError.upstreamFailed("No upstream could serve the request."))).returnOrThrow()
    }

    /// One try: call `next` and read up to the commit point.
    func attempt(_ request: ChatRequest, context: StageContext, next: ChatHandler) async throws -> Outcome {
        let response: ChatResponse
        do {
            response = try await next(request, context)
        } catch let error as CancellationError {
            throw error
        } catch let error as RelayError {
            return Self.isTransient(error) ? .retryable(.error(error), asked: nil) : .final(.error(error))
        } catch {
            if Task.isCancelled { throw CancellationError() }
            return .retryable(.error(error), asked: nil)
        }
        guard response.status.kind == .successful else {
            let failure = Failure.response(response)
            return self.retryOn.contains(response.status.code)
                ? .retryable(failure, asked: RetryBackoff.upstreamAsked(in: response.headerFields)) : .final(failure)
        }
        guard case .events(let events) = response.body else { return .success(response) }
        var iterator = events.makeAsyncIterator()
        var held: [StreamEvent] = []
        var heldBytes = 0
        while true {
            let event: StreamEvent?
            do {
                event = try await iterator.next()
            } catch let error as CancellationError {
                throw error
            } catch {
                if Task.isCancelled { throw CancellationError() }
                return .retryable(.error(error), asked: nil)
            }
            guard let event else {
                let error = RelayError.upstreamFailed("The upstream stream ended before any content.")
                return .retryable(.error(error), asked: nil)
            }
            held.append(event)
            heldBytes += event.bytes.readableBytes
            if event.commits || heldBytes > self.maximumHeldBytes {
                var committed = response
                committed.body = .events(EventStream(HeldThenRest(held: held, rest: iterator), waitsWithDeadlines: events.waitsWithDeadlines))
                return .success(committed)
            }
        }
    }

    /// Time since the call, on `clock` (a manual one in tests).
    static func stopwatch<C: Clock>(_ clock: C) -> @Sendable () -> Duration where C.Duration == Duration {
        let start = clock.now
        return { start.duration(to: clock.now) }
    }

    /// Failures that another attempt may not meet: the upstream could not be reached, timed
    /// out, or dropped the connection.
    static func isTransient(_ error: RelayError) -> Bool {
        ["upstream_unreachable", "upstream_timeout", "upstream_error"].contains(error.code ?? "")
    }
}

/// The events an attempt held back, then the rest of its stream. Iterated once.
final class HeldThenRest: AsyncSequence, @unchecked Sendable {
    typealias Element = StreamEvent
    private var held: ArraySlice<StreamEvent>
    private var rest: EventStream.Iterator

    init(held: [StreamEvent], rest: EventStream.Iterator) {
        self.held = held[...]
        self.rest = rest
    }

    struct AsyncIterator: DeadlineIterator {
        let source: HeldThenRest
        mutating func next() async throws -> StreamEvent? {
            if let event = self.source.held.popFirst() { return event }
            return try await self.source.rest.next()
        }

        /// Only for a stream whose rest waits with deadlines (see ``RetryStage``).
        nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
            if let event = self.source.held.popFirst() { return .element(event) }
            return try await self.source.rest.next(before: deadline)
        }

        var canBeReady: Bool { self.source.rest.canBeReady }

        mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
            if let event = self.source.held.popFirst() { return .element(event) }
            return try self.source.rest.nextIfReady()
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(source: self) }
}
