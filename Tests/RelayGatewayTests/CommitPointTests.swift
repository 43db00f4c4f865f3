import NIOCore
import RelayCore
@testable import RelayGateway
import Testing

/// What an exchange takes behind the commit point before it writes the head: the events
/// the layers beneath have ready, so that a stream that came in whole goes out with its
/// head and needs no relay task.
@Suite("Events ready behind the commit point")
struct CommitPointTests {
    static func chunk(_ index: Int, filler: Int = 0) -> StreamEvent {
        let json = #"{"id":"c","choices":[{"index":0,"delta":{"content":"part\#(index)\#(String(repeating: "x", count: filler))"}}]}"#
        return StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(json)\n\n"), data: ByteBuffer(string: json)))
    }

    /// What a ready path says after its events.
    enum After: Sendable {
        case end, wait, fail
    }

    /// A stream whose ready path hands over `events`, then ends, waits or fails.
    struct Ready: AsyncSequence, Sendable {
        typealias Element = StreamEvent
        let events: [StreamEvent]
        let after: After

        struct AsyncIterator: ReadyIterator {
            var remaining: ArraySlice<StreamEvent>
            let after: After

            mutating func next() async throws -> StreamEvent? {
                if let event = self.remaining.popFirst() { return event }
                if case .fail = self.after { throw RelayError.upstreamFailed("reset") }
                return nil
            }

            mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
                if let event = self.remaining.popFirst() { return .element(event) }
                switch self.after {
                case .end: return .end
                case .wait: return .deadlinePassed
                case .fail: throw RelayError.upstreamFailed("reset")
                }
            }

            var canBeReady: Bool { true }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.events[...], after: self.after) }
    }

    static func take(_ events: [StreamEvent], after: After) -> (held: [StreamEvent], rest: ChatExchange.ReadyRest) {
        var iterator = EventStream(Ready(events: events, after: after)).makeAsyncIterator()
        var held = [Self.chunk(0)]
        let rest = ChatExchange.takeReady(from: &iterator, into: &held)
        return (held, rest)
    }

    @Test("a stream that ended is taken whole: no relay follows")
    func endedStream() {
        let (held, rest) = Self.take((1...3).map { Self.chunk($0) }, after: .end)
        #expect(held.count == 4)
        guard case .ended = rest else {
            Issue.record("expected the end, got \(rest)")
            return
        }
    }

    @Test("a failure behind ready events is kept for after them")
    func failureBehindEvents() {
        let (held, rest) = Self.take((1...2).map { Self.chunk($0) }, after: .fail)
        #expect(held.count == 3)
        guard case .failed(let error) = rest else {
            Issue.record("expected the failure, got \(rest)")
            return
        }
        #expect((error as? RelayError)?.message.contains("reset") == true)
    }

    @Test("when nothing more is ready, the relay goes on with the iterator")
    func waiting() async throws {
        var iterator = EventStream(Ready(events: [Self.chunk(1)], after: .wait)).makeAsyncIterator()
        var held: [StreamEvent] = []
        guard case .more = ChatExchange.takeReady(from: &iterator, into: &held) else {
            Issue.record("expected more to come")
            return
        }
        #expect(held.count == 1)
        #expect(try await iterator.next() == nil)
    }

    @Test("at most a relay round's events and bytes are taken")
    func bounded() async throws {
        let many = (1...200).map { Self.chunk($0) }
        let (held, rest) = Self.take(many, after: .end)
        #expect(held.count == 1 + ChatExchange.Relay.eventsPerYield)
        guard case .more = rest else {
            Issue.record("expected more to come")
            return
        }
        let large = (1...20).map { Self.chunk($0, filler: 4000) }
        let (heldLarge, _) = Self.take(large, after: .end)
        let bytes = heldLarge.dropFirst().reduce(0) { $0 + $1.bytes.readableBytes }
        #expect(bytes >= ChatExchange.Relay.batchBytes)
        #expect(bytes < ChatExchange.Relay.batchBytes + 4200)
    }
}
