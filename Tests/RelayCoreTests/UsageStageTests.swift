import HTTPTypes
import Logging
import NIOCore
import RelayCore
import Synchronization
import Testing

@Suite("Usage stage", .timeLimit(.minutes(1)))
struct UsageStageTests {
    static let question = #""model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]"#

    // MARK: The request

    @Test("A stream without usage asked for gets stream_options.include_usage, other members kept")
    func requestRewrite() async throws {
        let plain = try await run("{\(Self.question),\"stream\":true}", events: [])
        #expect(plain.upstreamRequest.json["stream_options"] == ["include_usage": true])
        #expect(plain.upstreamRequest.json["messages"] == plain.clientRequest.json["messages"])
        #expect(try JSONValue(parsing: plain.upstreamRequest.body.readableBytesView)["stream_options"] == ["include_usage": true])

        let other = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"continuous_usage_stats":true}}"#, events: [])
        #expect(other.upstreamRequest.json["stream_options"] == ["include_usage": true, "continuous_usage_stats": true])

        let refused = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"include_usage":false}}"#, events: [])
        #expect(refused.upstreamRequest.json["stream_options"] == ["include_usage": true])
    }

    @Test(
        "The request is sent as the client wrote it when usage was asked for or nothing streams",
        arguments: [
            #"{"stream":true,"stream_options":{"include_usage":true},"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            #"{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}"#,
        ]
    )
    func requestUnchanged(body: String) async throws {
        let outcome = try await run(body, events: [])
        #expect(String(buffer: outcome.upstreamRequest.body) == body)
    }

    // MARK: The stream

    @Test("The usage-only chunk is removed only when the stage asked for it")
    func usageChunkHiddenOnlyWhenAdded() async throws {
        let events = try openAIStream()
        let added = try await run("{\(Self.question),\"stream\":true}", events: events)
        #expect(added.received.map(text) == [events[0], events[1], events[2], events[4]].map(text))
        #expect(added.record.tokens == TokenUsage(prompt: 8, completion: 2, reasoning: 0, cachedPrompt: 0, total: 10))

        let asked = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"include_usage":true}}"#, events: events)
        #expect(asked.received.map(text) == events.map(text))
        #expect(asked.record.tokens == TokenUsage(prompt: 8, completion: 2, reasoning: 0, cachedPrompt: 0, total: 10))
        #expect(asked.record.eventsReceived == 5)
        #expect(asked.record.servedModel == "gpt-4o-mini-2024-07-18")
        #expect(asked.record.finishReason == "stop")
    }

    @Test("Groq reports usage twice: counted once, the last report wins")
    func groqDoubleUsage() async throws {
        let usage = #"{"queue_time":0.19,"prompt_tokens":20,"prompt_time":0.01,"completion_tokens":4,"completion_time":0.009,"total_tokens":24,"total_time":0.02}"#
        let events = [
            try Wire.chunk(#"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}"#),
            try Wire.chunk(#"{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}"#),
            try Wire.chunk(
                #"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#,
                extra: #","x_groq":{"id":"req_1","usage":\#(usage)},"usage":\#(usage)"#
            ),
            try Wire.data(#"{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"moonshotai/kimi-k2","choices":[],"usage":\#(usage)}"#),
            try Wire.done(),
        ]
        let outcome = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"include_usage":true}}"#, events: events)
        #expect(outcome.record.tokens == TokenUsage(prompt: 20, completion: 4, total: 24))

        // Only x_groq.usage, then a different top-level report: the last one, not the sum.
        let later = [
            try Wire.chunk(#"{"index":0,"delta":{},"finish_reason":"stop"}"#, extra: #","x_groq":{"usage":{"prompt_tokens":20,"completion_tokens":4,"total_tokens":24}}"#),
            try Wire.data(#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25}}"#),
        ]
        let second = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"include_usage":true}}"#, events: later)
        #expect(second.record.tokens == TokenUsage(prompt: 20, completion: 5, total: 25))
    }

    @Test("Azure's choices:[] filter chunk is neither usage nor removed")
    func azureFilterChunk() async throws {
        let filter = try Wire.data(
            #"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#
        )
        let events = [filter] + (try openAIStream())
        let outcome = try await run("{\(Self.question),\"stream\":true}", events: events)
        #expect(text(outcome.received[0]) == text(filter))
        #expect(outcome.received.count == 5, "only the usage-only chunk is gone")
        #expect(outcome.record.tokens == TokenUsage(prompt: 8, completion: 2, reasoning: 0, cachedPrompt: 0, total: 10))
        #expect(outcome.record.servedModel == "gpt-4o-mini-2024-07-18", "an empty model is not a served model")
    }

    @Test("Usage inside the finish chunk is read and stays where it is")
    func usageInFinishChunk() async throws {
        let finish = try Wire.chunk(
            #"{"index":0,"delta":{},"finish_reason":"stop"}"#,
            extra: #","usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":5}}"#
        )
        let events = [try Wire.chunk(#"{"index":0,"delta":{"role":"assistant","content":"Hi"}}"#), finish, try Wire.done()]
        let outcome = try await run("{\(Self.question),\"stream\":true}", events: events)
        #expect(outcome.received.map(text) == events.map(text))
        #expect(outcome.record.tokens == TokenUsage(prompt: 11, completion: 3, cachedPrompt: 5, total: 14))
        #expect(outcome.record.finishReason == "stop")
    }

    @Test("Older OpenRouter: usage in a chunk with choices after the finish is read and kept")
    func trailingUsageChunk() async throws {
        let trailing = try Wire.chunk(
            #"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#,
            extra: #","usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,"cost":0.0001}"#
        )
        let events = [
            try Wire.chunk(#"{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}"#),
            try Wire.chunk(#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop","native_finish_reason":"completed"}"#),
            trailing,
            try Wire.done(),
        ]
        let outcome = try await run("{\(Self.question),\"stream\":true}", events: events)
        #expect(outcome.received.map(text) == events.map(text))
        #expect(outcome.record.tokens == TokenUsage(prompt: 30, completion: 7, total: 37))
    }

    @Test("xAI's arithmetic is kept: completion without reasoning, total with it")
    func xaiArithmetic() async throws {
        let usage = try Wire.data(
            #"{"id":"x","object":"chat.completion.chunk","model":"grok-4-fast-reasoning","choices":[],"usage":{"prompt_tokens":126,"completion_tokens":2,"total_tokens":251,"prompt_tokens_details":{"text_tokens":126,"cached_tokens":125},"completion_tokens_details":{"reasoning_tokens":123},"num_sources_used":0}}"#
        )
        let outcome = try await run(#"{\#(Self.question),"stream":true,"stream_options":{"include_usage":true}}"#, events: [usage, try Wire.done()])
        #expect(outcome.record.tokens == TokenUsage(prompt: 126, completion: 2, reasoning: 123, cachedPrompt: 125, total: 251))
        #expect(outcome.received.count == 2)
    }

    @Test("Non-streaming: usage, model and finish reason come from the whole body")
    func wholeBody() async throws {
        let body = #"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":4}}}"#
        let outcome = try await run("{\(Self.question)}", whole: body)
        #expect(outcome.record.tokens == TokenUsage(prompt: 9, completion: 12, reasoning: 4, total: 21))
        #expect(outcome.record.servedModel == "gpt-4o-2024-08-06")
        #expect(outcome.record.finishReason == "length")
        guard case .whole(let passed) = outcome.response.body else {
            Issue.record("a whole body must stay whole")
            return
        }
        #expect(String(buffer: passed) == body)

        let failed = try await run("{\(Self.question)}", whole: #"{"error":{"message":"no","usage":{"prompt_tokens":1}}}"#, status: .badRequest)
        #expect(failed.record.tokens == TokenUsage())
    }

    @Test("The normaliser reads nothing from a report without counts")
    func emptyReport() {
        #expect(UsageNormalizer.tokens(from: [:]) == nil)
        #expect(UsageNormalizer.tokens(from: ["queue_time": .number(0.1)]) == nil)
        #expect(UsageNormalizer.tokens(from: .null) == nil)
        #expect(UsageNormalizer.tokens(from: ["total_tokens": 3]) == TokenUsage(total: 3))
    }

    // MARK: Helpers

    struct Outcome {
        var clientRequest: ChatRequest
        var upstreamRequest: ChatRequest
        var response: ChatResponse
        var received: [StreamEvent]
        var record: UsageRecord
    }

    /// Runs `body` through the stage to a terminal that answers with `events` (or `whole`).
    func run(_ body: String, events: [StreamEvent] = [], whole: String? = nil, status: HTTPResponse.Status = .ok) async throws -> Outcome {
        let request = try ChatRequest(body: ByteBuffer(string: body))
        let context = makeContext()
        let seen = SentRequest()
        let response = try await UsageStage().handle(request, context: context) { upstreamRequest, _ in
            seen.request.withLock { $0 = upstreamRequest }
            if let whole { return ChatResponse(status: status, body: .whole(ByteBuffer(string: whole))) }
            return ChatResponse(status: status, body: .events(EventStream(events)))
        }
        var received: [StreamEvent] = []
        if case .events(let stream) = response.body {
            for try await event in stream { received.append(event) }
        }
        let upstreamRequest = try #require(seen.request.withLock { $0 })
        return Outcome(clientRequest: request, upstreamRequest: upstreamRequest, response: response, received: received, record: context.record.snapshot)
    }

    /// An OpenAI stream: role, text, finish, usage-only chunk, `[DONE]`.
    func openAIStream() throws -> [StreamEvent] {
        [
            try Wire.chunk(#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#, extra: #","usage":null"#),
            try Wire.chunk(#"{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}"#, extra: #","usage":null"#),
            try Wire.chunk(#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#, extra: #","usage":null"#),
            try Wire.data(
                #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"obfuscation":"ab"}"#
            ),
            try Wire.done(),
        ]
    }
}

/// SSE events as providers write them, decoded the way the gateway decodes upstream bytes.
private enum Wire {
    static func event(_ text: String) throws -> StreamEvent {
        var decoder = SSEDecoder()
        var buffer = ByteBuffer(string: text)
        let frame = try #require(try decoder.decode(buffer: &buffer))
        return StreamEvent(upstream: frame)
    }

    static func data(_ json: String) throws -> StreamEvent { try self.event("data: \(json)\n\n") }

    /// A chunk with one choice; `extra` is spliced in after `choices`.
    static func chunk(_ choice: String, extra: String = "") throws -> StreamEvent {
        try self.data(
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[\#(choice)]\#(extra)}"#
        )
    }

    static func done() throws -> StreamEvent { try self.event("data: [DONE]\n\n") }
}

/// What the stage sent upstream.
private final class SentRequest: Sendable {
    let request = Mutex<ChatRequest?>(nil)
}

private func text(_ event: StreamEvent) -> String { String(buffer: event.bytes) }

private func makeContext() -> StageContext {
    let record = RequestRecord(UsageRecord(requestID: "req_usage", requestedModel: "gpt-4o-mini", upstream: "test", stream: true, caller: nil))
    return StageContext(
        requestID: "req_usage",
        requestedModel: "gpt-4o-mini",
        upstreamName: "test",
        logger: Logger(label: "usage-tests"),
        record: record
    )
}
