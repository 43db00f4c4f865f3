import NIOCore
import Testing

@testable import RelayCore

@Suite("StreamEvent classification and the commit point")
struct StreamEventTests {
    @Test("data: [DONE] is done, with or without the space", arguments: ["data: [DONE]\n\n", "data:[DONE]\n\n", "data: [DONE]"])
    func done(block: String) throws {
        let event = try ChunkSamples.event(block: block)
        #expect(event.kind == .done)
        #expect(event.facts == nil)
        #expect(event.commits)
    }

    @Test("A comment-only block is a comment and does not commit")
    func comment() throws {
        let event = try ChunkSamples.event(block: ": OPENROUTER PROCESSING\n\n")
        #expect(event.kind == .comment)
        #expect(!event.commits)
    }

    @Test("An in-band error object is an error and commits")
    func error() throws {
        let event = try ChunkSamples.event(#"{"error":{"message":"Provider returned error","code":429,"metadata":{"provider_name":"WandB"}}}"#)
        #expect(event.kind == .error)
        #expect(event.facts == nil)
        #expect(event.commits)
    }

    @Test("A chunk is read once into facts", arguments: [ChunkSamples.xaiContent, ChunkSamples.azurePromptFilter, ChunkSamples.avianReasoningDetails])
    func chunk(json: String) throws {
        let event = try ChunkSamples.event(json)
        #expect(event.kind == .chunk)
        #expect(event.facts == ChunkFacts(try ChunkSamples.object(json)))
    }

    @Test("An object that calls itself a chunk is a chunk even without choices (Z.ai, Azure)")
    func chunkByObjectName() throws {
        let event = try ChunkSamples.event(#"{"id":"x","object":"chat.completion.chunk","usage":{"total_tokens":3}}"#)
        #expect(event.kind == .chunk)
        #expect(event.facts?.usage?["total_tokens"]?.intValue == 3)
    }

    @Test("Anything else is other and passes through", arguments: [
        "data: hello\n\n", "data: {\"id\":\"x\"}\n\n", "data: [1,2]\n\n", "data: {not json\n\n", "event: ping\n\n", "id: 4\n\n",
    ])
    func other(block: String) throws {
        let event = try ChunkSamples.event(block: block)
        #expect(event.kind == .other)
        #expect(event.facts == nil)
    }

    @Test("Commit point: what a client shows commits, envelopes and keepalives do not", arguments: [
        ("role-only chunk", ChunkSamples.xaiRole, false),
        ("OpenAI role chunk", ChunkSamples.openAIRole, false),
        ("xAI delta:{}", ChunkSamples.xaiEmpty, false),
        ("OpenRouter empty reasoning chunk", ChunkSamples.openRouterEmpty, false),
        ("Azure prompt filter chunk", ChunkSamples.azurePromptFilter, false),
        ("usage-only chunk", ChunkSamples.xaiUsage, false),
        ("older OpenRouter usage chunk", ChunkSamples.openRouterLateUsage, false),
        ("content chunk", ChunkSamples.xaiContent, true),
        ("reasoning_content chunk", ChunkSamples.xaiReasoningContent, true),
        ("encrypted reasoning chunk", ChunkSamples.openRouterEncryptedReasoning, true),
        ("tool call chunk", ChunkSamples.openRouterToolCallStart, true),
        ("finish chunk", ChunkSamples.xaiFinish, true),
    ])
    func commits(_ name: String, _ json: String, _ expected: Bool) throws {
        let event = try ChunkSamples.event(json)
        #expect(event.kind == .chunk, "\(name)")
        #expect(event.commits == expected, "\(name)")
    }

    @Test("A heartbeat is a comment the relay made; it does not commit")
    func heartbeat() throws {
        let heartbeat = StreamEvent.commentHeartbeat()
        #expect(heartbeat.kind == .heartbeat)
        #expect(!heartbeat.commits)
        #expect(String(buffer: heartbeat.bytes) == ": keepalive\n\n")
        let decoded = try #require(try SSEFeed.frames([heartbeat.bytes]).first)
        #expect(decoded.isCommentOnly)
        #expect(String(buffer: StreamEvent.commentHeartbeat("ping").bytes) == ": ping\n\n")
    }

    @Test("An upstream event's bytes are its raw bytes, untouched")
    func bytesAreRaw() throws {
        let block = "data: \(ChunkSamples.avianReasoningDetails)\n\n"
        let event = try ChunkSamples.event(block: block)
        #expect(String(buffer: event.bytes) == block)
    }

    @Test("Relay-made data events and [DONE] decode back to themselves")
    func relayMadeEvents() throws {
        let made = StreamEvent.data(["error": ["message": "boom", "type": "server_error"]], kind: .error)
        #expect(String(buffer: made.bytes) == #"data: {"error":{"message":"boom","type":"server_error"}}"# + "\n\n")
        let again = StreamEvent(upstream: try #require(try SSEFeed.frames([made.bytes]).first))
        #expect(again.kind == .error)
        #expect(again.frame == made.frame)

        #expect(String(buffer: StreamEvent.done.bytes) == "data: [DONE]\n\n")
        let done = StreamEvent(upstream: try #require(try SSEFeed.frames([StreamEvent.done.bytes]).first))
        #expect(done.kind == .done)
        #expect(done.frame == StreamEvent.done.frame)
    }

    @Test("The seed's first content event is the first that commits")
    func firstCommitInSeedShape() throws {
        let jsons = [ChunkSamples.xaiRole] + Array(repeating: ChunkSamples.xaiEmpty, count: 5)
            + [ChunkSamples.xaiContent, ChunkSamples.xaiFinish, ChunkSamples.xaiUsage]
        let events = try jsons.map { try ChunkSamples.event($0) } + [try ChunkSamples.event(block: "data: [DONE]\n\n")]
        #expect(events.firstIndex(where: \.commits) == 6)
    }

    /// Every stage copies events and every stream's suspended tasks hold some in their
    /// async frames; the facts and the rare SSE fields live behind references to keep
    /// that cheap. (It was about 250 bytes with them inline.)
    @Test("An event stays small: its facts and the rare SSE fields sit behind references")
    func small() throws {
        #expect(MemoryLayout<StreamEvent>.size <= 96)
        var event = try ChunkSamples.event(ChunkSamples.xaiContent)
        let facts = try #require(event.facts)
        var copy = event
        copy.facts?.finishReason = "stop"
        #expect(copy.facts?.finishReason == "stop")
        #expect(event.facts == facts, "a copy's change does not reach the original")
        event.frame.eventType = "message"
        event.frame.retry = 5
        #expect(event.frame.eventType == "message" && event.frame.retry == 5 && event.frame.id == nil)
        #expect(event.frame != copy.frame)
        event.frame.eventType = nil
        event.frame.retry = nil
        #expect(event.frame == copy.frame)
    }
}
