import HTTPTypes
import Logging
import NIOCore
@testable import RelayCore
import Synchronization
import Testing

/// Chunks shaped like OpenAI's (the corpus's gpt-4o-mini stream), for moderation tests.
enum ModerationWire {
    static let envelope = #""id":"chatcmpl-mod","object":"chat.completion.chunk","created":1782321902,"model":"gpt-4o-mini-2024-07-18","obfuscation":"xyz""#

    static func chunk(_ delta: String, finish: String? = nil, index: Int = 0) throws -> StreamEvent {
        let reason = finish.map { #""\#($0)""# } ?? "null"
        return try ChunkSamples.event(#"{\#(envelope),"choices":[{"index":\#(index),"delta":\#(delta),"logprobs":null,"finish_reason":\#(reason)}]}"#)
    }

    static func role() throws -> StreamEvent { try self.chunk(#"{"role":"assistant","content":"","refusal":null}"#) }

    static func content(_ text: String) throws -> StreamEvent { try self.chunk(#"{"content":\#(JSONValue.string(text).serialized())}"#) }

    static func finish(_ reason: String = "stop") throws -> StreamEvent { try self.chunk("{}", finish: reason) }

    static func usage() throws -> StreamEvent {
        try ChunkSamples.event(#"{\#(envelope),"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#)
    }

    static let done = StreamEvent.done

    /// A whole stream: role, the text in the given pieces, finish, usage, `[DONE]`.
    static func stream(_ pieces: [String]) throws -> [StreamEvent] {
        try [self.role()] + pieces.map(self.content) + [self.finish(), self.usage(), self.done]
    }
}

/// The phrase the split tests forbid, and the ways it arrives.
enum Nightingale {
    static let phrase = "project nightingale"
    static let text = "The code name is project nightingale, keep it secret."

    /// The text in two pieces, the phrase split between them.
    static let twoChunks = ["The code name is project night", "ingale, keep it secret."]
    /// In three pieces, the phrase split twice.
    static let threeChunks = ["The code name is proj", "ect nighti", "ngale, keep it secret."]
    /// One character per chunk.
    static var oneCharacterChunks: [String] { text.map { String($0) } }

    static let splits: [(String, [String])] = [("two", twoChunks), ("three", threeChunks), ("one-character", oneCharacterChunks)]
}

/// An upstream that hands out a fixed list of events and counts how many were pulled.
final class CountingUpstream: Sendable {
    private let events: [StreamEvent]
    private let state = Mutex<(pulled: Int, released: Bool)>((0, false))

    init(_ events: [StreamEvent]) { self.events = events }

    var pulled: Int { self.state.withLock { $0.pulled } }
    /// Whether the iterator reading it has been dropped (the upstream request released).
    var released: Bool { self.state.withLock { $0.released } }

    var stream: EventStream { EventStream(Sequence(upstream: self)) }

    fileprivate func pull(_ index: Int) -> StreamEvent? {
        self.state.withLock { state in
            guard index < self.events.count else { return nil }
            state.pulled = max(state.pulled, index + 1)
            return self.events[index]
        }
    }

    fileprivate func release() { self.state.withLock { $0.released = true } }

    struct Sequence: AsyncSequence, Sendable {
        typealias Element = StreamEvent
        let upstream: CountingUpstream
        func makeAsyncIterator() -> Iterator { Iterator(lifetime: Lifetime(self.upstream)) }

        struct Iterator: AsyncIteratorProtocol {
            let lifetime: Lifetime
            var position = 0
            mutating func next() async throws -> StreamEvent? {
                defer { self.position += 1 }
                return self.lifetime.upstream.pull(self.position)
            }
        }

        final class Lifetime: Sendable {
            let upstream: CountingUpstream
            init(_ upstream: CountingUpstream) { self.upstream = upstream }
            deinit { self.upstream.release() }
        }
    }
}

/// What the client received from a stage's stream.
struct ModerationClientView {
    var events: [StreamEvent]

    /// Every byte the client got, as text.
    var bytes: String { self.events.map { String(buffer: $0.bytes) }.joined() }

    /// The `content` text of all chunks, joined.
    var content: String {
        self.events.compactMap { event -> String? in
            guard event.kind == .chunk, let data = event.frame.data, let json = try? JSONValue(parsing: data.readableBytesView) else { return nil }
            return json["choices"]?.arrayValue?.compactMap { $0["delta"]?["content"]?.stringValue }.joined()
        }.joined()
    }

    /// The finish reasons of all chunks, in order.
    var finishReasons: [String] {
        self.events.compactMap { event in event.facts?.finishReason }
    }

    var endsWithDone: Bool { self.events.last?.kind == .done }
}

func moderationContext(model: String = "gpt-4o-mini") -> StageContext {
    let record = RequestRecord(UsageRecord(requestID: "req_mod", requestedModel: model, upstream: "test", stream: true, caller: nil))
    return StageContext(requestID: "req_mod", requestedModel: model, upstreamName: "test", logger: Logger(label: "moderation-tests"), record: record)
}

func moderationRequest(stream: Bool = true, messages: String = #"[{"role":"user","content":"hi"}]"#) throws -> ChatRequest {
    try ChatRequest(body: ByteBuffer(string: #"{"model":"gpt-4o-mini","stream":\#(stream),"messages":\#(messages)}"#))
}

/// Runs `stage` over `upstream` to the end and returns what the client saw.
func moderate(_ stage: ModerationStage, _ upstream: CountingUpstream, context: StageContext = moderationContext()) async throws -> ModerationClientView {
    let response = try await stage.handle(try moderationRequest(), context: context) { _, _ in
        ChatResponse(status: .ok, body: .events(upstream.stream))
    }
    guard case .events(let events) = response.body else { throw ModerationTestFailure("the stage answered without a stream") }
    var received: [StreamEvent] = []
    for try await event in events { received.append(event) }
    return ModerationClientView(events: received)
}

/// A stage with one `patterns` hook of the given rules.
func patternStage(_ rules: [PatternRule], holdBack: Int = 64, output: ModerationOutputFields = .init(), clock: any Clock<Duration> = ContinuousClock()) -> ModerationStage {
    ModerationStage(rules: rules, holdBack: holdBack, outputFields: output, clock: clock)
}

func nightingaleRule(_ action: ModerationAction, replacement: String? = nil) throws -> PatternRule {
    try PatternRule(name: "codename", pattern: .literal(Nightingale.phrase), action: action, replacement: replacement)
}

struct ModerationTestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
