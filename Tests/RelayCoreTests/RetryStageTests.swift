import Foundation
import HTTPTypes
import Logging
import NIOCore
@testable import RelayCore
import Synchronization
import Testing

/// The retry stage alone, with a scripted `next` and a manual clock.
@Suite("Retry stage")
struct RetryStageTests {
    static func request() throws -> ChatRequest {
        try ChatRequest(body: ByteBuffer(string: #"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#))
    }

    static func context(fallbacks: [RouteTarget] = []) -> StageContext {
        let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "a", stream: true, caller: nil))
        return StageContext(requestID: "r", requestedModel: "m", upstreamName: "a", logger: Logger(label: "test"), record: record, fallbacks: fallbacks)
    }

    /// A chunk with `delta`; `id` marks which attempt it came from.
    static func chunk(_ delta: String, id: String = "c") -> StreamEvent {
        let json = #"{"id":"\#(id)","choices":[{"index":0,"delta":\#(delta)}]}"#
        return StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(json)\n\n"), data: ByteBuffer(string: json)))
    }

    static func stream(_ events: [StreamEvent], thenFail: Bool = false) -> ChatResponse {
        struct Failing: AsyncSequence, Sendable {
            typealias Element = StreamEvent
            let events: [StreamEvent]
            let fail: Bool
            struct AsyncIterator: AsyncIteratorProtocol {
                var remaining: ArraySlice<StreamEvent>
                let fail: Bool
                mutating func next() async throws -> StreamEvent? {
                    if let event = self.remaining.popFirst() { return event }
                    if self.fail { throw RelayError.upstreamFailed("reset") }
                    return nil
                }
            }
            func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.events[...], fail: self.fail) }
        }
        return ChatResponse(status: .ok, body: .events(EventStream(Failing(events: events, fail: thenFail))))
    }

    /// A `next` that plays one scripted answer per call and remembers where each call went.
    final class Script: Sendable {
        let answers: Mutex<[@Sendable () throws -> ChatResponse]>
        let calls = Mutex<[String]>([])
        init(_ answers: [@Sendable () throws -> ChatResponse]) { self.answers = Mutex(answers) }
        var handler: ChatHandler {
            { request, context in
                self.calls.withLock { $0.append("\(context.upstreamName)/\(request.json["model"]?.stringValue ?? "")") }
                let answer = self.answers.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                guard let answer else { throw RelayError.upstreamUnreachable("script exhausted") }
                return try answer()
            }
        }
    }

    static func collect(_ response: ChatResponse) async throws -> [StreamEvent] {
        guard case .events(let events) = response.body else { return [] }
        var all: [StreamEvent] = []
        for try await event in events { all.append(event) }
        return all
    }

    @Test("a 503 is retried after a backoff wait, and the successful attempt is returned whole")
    func retriesStatus() async throws {
        let clock = ManualClock()
        let stage = RetryStage(attempts: 3, backoff: RetryBackoff(base: .seconds(1), cap: .seconds(4)), clock: clock)
        let script = Script([
            { ChatResponse(error: RelayError(status: .serviceUnavailable, message: "busy", type: "x")) },
            { Self.stream([Self.chunk(#"{"role":"assistant"}"#), Self.chunk(#"{"content":"hi"}"#)]) },
        ])
        let task = Task { try await stage.handle(try Self.request(), context: Self.context(), next: script.handler) }
        let wake = await clock.nextSleeperDeadline()
        #expect(wake <= ManualClock.start.advanced(by: .seconds(1)), "full jitter: at most the base for the first retry")
        clock.advance(to: wake)
        let events = try await Self.collect(try await task.value)
        #expect(events.count == 2)
        #expect(script.calls.withLock { $0 } == ["a/m", "a/m"])
    }

    @Test("Retry-After is honoured up to max_retry_after; longer asks return the upstream's error")
    func retryAfter() async throws {
        var headers = HTTPFields()
        headers[HTTPField.Name("retry-after")!] = "2"
        #expect(RetryBackoff.upstreamAsked(in: headers) == .seconds(2))
        headers[HTTPField.Name("retry-after")!] = "Wed, 25 Nov 2026 15:00:10 GMT"
        let now = try #require(RetryBackoff.httpDate("Wed, 25 Nov 2026 15:00:00 GMT"))
        #expect(RetryBackoff.upstreamAsked(in: headers, now: now) == .seconds(10))
        var limits = HTTPFields()
        limits[HTTPField.Name("x-ratelimit-reset-requests")!] = "1s"
        limits[HTTPField.Name("x-ratelimit-reset-tokens")!] = "6m0s"
        #expect(RetryBackoff.upstreamAsked(in: limits) == .seconds(360))
        // An upstream's number too large for a Duration is the longest wait (so it exceeds
        // max_retry_after), not a trap; one that is not a number is no ask.
        for huge in ["1e300", "inf", "99999999999999999999999"] {
            headers[HTTPField.Name("retry-after")!] = huge
            let asked = try #require(RetryBackoff.upstreamAsked(in: headers))
            #expect(asked > .seconds(999_999_999))
        }
        headers[HTTPField.Name("retry-after")!] = "nan"
        #expect(RetryBackoff.upstreamAsked(in: headers) == nil)
        var hugeLimits = HTTPFields()
        hugeLimits[HTTPField.Name("x-ratelimit-reset-requests")!] = "1e300"
        hugeLimits[HTTPField.Name("x-ratelimit-reset-tokens")!] = "99999999999999999999h"
        #expect(try #require(RetryBackoff.upstreamAsked(in: hugeLimits)) > .seconds(999_999_999))

        var random = SystemRandomNumberGenerator()
        let backoff = RetryBackoff(base: .milliseconds(100), cap: .seconds(1), maximumRetryAfter: .seconds(5))
        #expect(backoff.decision(afterAttempt: 0, upstreamAsked: .seconds(2), random: &random) == .wait(.seconds(2)))
        #expect(backoff.decision(afterAttempt: 0, upstreamAsked: .seconds(6), random: &random) == .giveUp(asked: .seconds(6)))
        for attempt in 0..<10 {
            guard case .wait(let wait) = backoff.decision(afterAttempt: attempt, upstreamAsked: nil, random: &random) else {
                Issue.record("no wait")
                continue
            }
            #expect(wait >= .zero && wait <= min(.seconds(1), .milliseconds(100) * (1 << attempt)))
        }

        let clock = ManualClock()
        let stage = RetryStage(attempts: 3, backoff: backoff, clock: clock)
        let script = Script([{
            var response = ChatResponse(error: RelayError(status: .tooManyRequests, message: "slow down", type: "x"))
            response.headerFields[HTTPField.Name("retry-after")!] = "60"
            return response
        }])
        let response = try await stage.handle(try Self.request(), context: Self.context(), next: script.handler)
        #expect(response.status == .tooManyRequests, "the upstream's own error, without waiting a minute")
        #expect(script.calls.withLock { $0.count } == 1)
    }

    @Test("statuses not listed are never retried", arguments: [400, 401, 403, 404, 422])
    func notRetried(_ code: Int) async throws {
        let stage = RetryStage(attempts: 3, clock: ManualClock())
        let script = Script([{ ChatResponse(error: RelayError(status: HTTPResponse.Status(code: code), message: "no", type: "x")) }])
        let response = try await stage.handle(try Self.request(), context: Self.context(), next: script.handler)
        #expect(response.status.code == code)
        #expect(script.calls.withLock { $0.count } == 1)
    }

    @Test("a stream that fails before content is retried; its held events never come out")
    func preCommitFailure() async throws {
        let clock = ManualClock()
        let stage = RetryStage(attempts: 2, backoff: RetryBackoff(base: .milliseconds(10), cap: .milliseconds(10)), clock: clock)
        let script = Script([
            { Self.stream([Self.chunk(#"{"role":"assistant"}"#, id: "first-attempt"), Self.chunk("{}", id: "first-attempt")], thenFail: true) },
            { Self.stream([Self.chunk(#"{"role":"assistant"}"#), Self.chunk(#"{"content":"second"}"#)]) },
        ])
        let task = Task { try await stage.handle(try Self.request(), context: Self.context(), next: script.handler) }
        clock.advance(to: await clock.nextSleeperDeadline())
        let events = try await Self.collect(try await task.value)
        let text = events.map { String(buffer: $0.bytes) }.joined()
        #expect(!text.contains("first-attempt"))
        #expect(text.contains("second"))
    }

    @Test("after content, a failure is not retried: it surfaces in the stream")
    func postCommitFailure() async throws {
        let stage = RetryStage(attempts: 3, clock: ManualClock())
        let script = Script([{ Self.stream([Self.chunk(#"{"content":"once"}"#)], thenFail: true) }])
        let response = try await stage.handle(try Self.request(), context: Self.context(), next: script.handler)
        await #expect(throws: RelayError.self) { _ = try await Self.collect(response) }
        #expect(script.calls.withLock { $0.count } == 1)
    }

    @Test("when the attempts are spent, the fallbacks are tried in order with their model names")
    func fallback() async throws {
        let clock = ManualClock()
        let stage = RetryStage(attempts: 1, clock: clock)
        let script = Script([
            { throw RelayError.upstreamUnreachable("down") },
            { throw RelayError.upstreamUnreachable("down too") },
            { Self.stream([Self.chunk(#"{"content":"from c"}"#)]) },
        ])
        let context = Self.context(fallbacks: [RouteTarget(upstream: "b", model: "m-b"), RouteTarget(upstream: "c", model: "m-c")])
        let response = try await stage.handle(try Self.request(), context: context, next: script.handler)
        #expect(try await Self.collect(response).count == 1)
        #expect(script.calls.withLock { $0 } == ["a/m", "b/m-b", "c/m-c"])
        #expect(context.record.snapshot.upstream == "c")
    }

    @Test("a wait that would pass the deadline is not waited: the upstream's error comes back at once")
    func deadline() async throws {
        let stage = RetryStage(attempts: 5, deadline: .seconds(1), backoff: RetryBackoff(maximumRetryAfter: .seconds(30)), clock: ManualClock())
        let script = Script([{
            var response = ChatResponse(error: RelayError(status: .serviceUnavailable, message: "busy", type: "x"))
            response.headerFields[HTTPField.Name("retry-after")!] = "5"
            return response
        }])
        let response = try await stage.handle(try Self.request(), context: Self.context(), next: script.handler)
        #expect(response.status == .serviceUnavailable)
        #expect(script.calls.withLock { $0.count } == 1)
    }

    @Test("cancelling during a backoff wait stops at once, with no further attempt")
    func cancelDuringWait() async throws {
        let clock = ManualClock()
        let stage = RetryStage(attempts: 3, backoff: RetryBackoff(base: .seconds(10), cap: .seconds(10)), clock: clock)
        let script = Script([
            { throw RelayError.upstreamUnreachable("down") },
            { Self.stream([Self.chunk(#"{"content":"never"}"#)]) },
        ])
        let task = Task { try await stage.handle(try Self.request(), context: Self.context(), next: script.handler) }
        _ = await clock.nextSleeperDeadline()
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(script.calls.withLock { $0.count } == 1)
    }

    @Test("options: defaults, and bad values named")
    func options() throws {
        let stage = try RetryStage(options: ["attempts": 4, "retry_on": [429, 503], "base_delay": "100ms", "deadline": "30s"])
        #expect(stage.attempts == 4)
        #expect(stage.retryOn == [429, 503])
        #expect(stage.backoff.base == .milliseconds(100))
        #expect(stage.deadline == .seconds(30))
        #expect(throws: StageConfigurationError.self) { try RetryStage(options: ["attempts": 0]) }
        #expect(throws: StageConfigurationError.self) { try RetryStage(options: ["retry_on": [200]]) }
        #expect(throws: StageConfigurationError.self) { try RetryStage(options: ["tries": 2]) }
    }
}
