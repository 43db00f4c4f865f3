import Foundation
import HTTPTypes
import Logging
import NIOCore
import RelayCore
@testable import RelayGateway
import Testing

/// The keepalive and usage stages over every recorded provider stream: what a client
/// reconstructs must not change, and the usage record must be the provider's own report.
@Suite("Stages over the recorded corpus", .timeLimit(.minutes(2)))
struct StagesCorpusTests {
    @Test(
        "keepalive + usage change nothing a client reconstructs, and record the provider's usage",
        .enabled(if: StagesCorpus.corpusExists, "skipped: the shared corpus is not at \(StagesCorpus.corpusFolder)"),
        arguments: StagesCorpus.streamingCassettes
    )
    func corpusStream(name: String) async throws {
        let streams = try StagesCorpus.streams(in: StagesCorpus.corpusFolder + "/chat/" + name)
        try #require(!streams.isEmpty, "\(name) holds no successful stream")
        for stream in streams {
            for clientAskedForUsage in [true, false] {
                try await Self.check(stream, clientAskedForUsage: clientAskedForUsage, name: name)
            }
        }
    }

    @Test("The seed: 122 empty chunks dropped, the six meaningful events kept, usage recorded")
    func seed() async throws {
        let streams = try StagesCorpus.streams(in: StagesCorpus.repositoryRoot + "/Tests/Fixtures/cassettes/seed-xai-grok-4-fast-keepalive.yaml")
        let stream = try #require(streams.first)
        #expect(stream.request.clientRequestedStreamUsage, "the seed's client asked for usage")
        let (sent, record) = try await StagesCorpus.relay(stream.events, request: stream.request)

        #expect(sent.count == 6)
        guard sent.count == 6 else { return }
        #expect(sent[0].facts?.hasRole == true)
        #expect(sent[0].facts?.carriesContent == false)
        #expect(sent[1].contentText == "Olá")
        #expect(sent[2].contentText == "!")
        #expect(sent[3].facts?.finishReason == "stop")
        #expect(sent[4].facts?.hasNoChoices == true)
        #expect(sent[4].facts?.usage != nil)
        #expect(sent[5].kind == .done)
        #expect(sent.map { String(buffer: $0.bytes) } == stream.events.filter(StagesCorpus.isMeaningful).map { String(buffer: $0.bytes) })

        #expect(record.emptyChunksDropped == 122)
        #expect(record.heartbeatsSent == 0)
        #expect(record.eventsReceived == 128)
        #expect(record.tokens == TokenUsage(prompt: 126, completion: 2, reasoning: 123, cachedPrompt: 125, total: 251))
        #expect(record.servedModel == "grok-4-fast-reasoning")
        #expect(record.finishReason == "stop")
    }

    static func check(_ stream: StagesCorpus.RecordedStream, clientAskedForUsage: Bool, name: String) async throws {
        var request = stream.request
        if !clientAskedForUsage { request.set("stream_options", to: nil) }
        let (sent, record) = try await StagesCorpus.relay(stream.events, request: request)
        let label = "\(name) (client asked for usage: \(clientAskedForUsage))"

        #expect(stream.clientView.finishReason != nil, "\(label): the recording has a finish reason to compare")
        #expect(StagesCorpus.ClientView(sent, json: stream.json) == stream.clientView, "\(label): the client's view changed")
        #expect(record.tokens == stream.lastUsageReport, "\(label): usage record")
        #expect(record.eventsReceived == stream.events.count, "\(label)")
        #expect(record.heartbeatsSent == 0, "\(label)")
        #expect(!sent.contains { $0.kind == .heartbeat || $0.kind == .comment }, "\(label)")

        // What goes out is what came in, byte for byte, minus what carries nothing.
        var remaining = stream.events[...]
        for event in sent {
            let bytes = String(buffer: event.bytes)
            guard let index = remaining.firstIndex(where: { String(buffer: $0.bytes) == bytes }) else {
                Issue.record("\(label): an event that did not come from upstream (or out of order): \(bytes)")
                return
            }
            remaining = remaining[(index + 1)...]
        }
        let usageOnly = sent.filter { $0.facts?.hasNoChoices == true && $0.facts?.usage != nil }
        if clientAskedForUsage {
            #expect(sent.count + record.emptyChunksDropped == stream.events.count, "\(label): only empty chunks and comments dropped")
        } else {
            #expect(usageOnly.isEmpty, "\(label): a usage-only chunk the client did not ask for")
        }
    }
}

extension StagesCorpus {
    /// What a client puts together from a stream: the text, the reasoning, the tool calls and
    /// how it finished.
    struct ClientView: Equatable, CustomStringConvertible {
        struct ToolCall: Equatable {
            var id = ""
            var name = ""
            var arguments = ""
        }

        var content = ""
        var reasoning = ""
        var refusal = ""
        var toolCalls: [Int: ToolCall] = [:]
        var finishReason: String?

        /// - Parameter json: the events' JSON by their bytes (parsing is slow in debug builds).
        init(_ events: [StreamEvent], json: [String: JSONValue]) {
            for event in events where event.kind == .chunk {
                guard let chunk = json[String(buffer: event.bytes)] ?? StagesCorpus.parse(event) else { continue }
                for choice in chunk["choices"]?.arrayValue ?? [] {
                    if self.finishReason == nil, let reason = choice["finish_reason"]?.stringValue { self.finishReason = reason }
                    guard let delta = choice["delta"] else { continue }
                    self.content += delta["content"]?.stringValue ?? ""
                    self.reasoning += delta["reasoning_content"]?.stringValue ?? delta["reasoning"]?.stringValue ?? ""
                    self.refusal += delta["refusal"]?.stringValue ?? ""
                    for call in delta["tool_calls"]?.arrayValue ?? [] {
                        let index = call["index"]?.intValue ?? 0
                        var known = self.toolCalls[index] ?? ToolCall()
                        if known.id.isEmpty { known.id = call["id"]?.stringValue ?? "" }
                        if known.name.isEmpty { known.name = call["function"]?["name"]?.stringValue ?? "" }
                        known.arguments += call["function"]?["arguments"]?.stringValue ?? ""
                        self.toolCalls[index] = known
                    }
                }
            }
        }

        var description: String {
            "content \(self.content.count) chars, reasoning \(self.reasoning.count) chars, \(self.toolCalls.count) tool call(s), finish \(self.finishReason ?? "-")"
        }
    }
}

/// Where the recordings are and how to replay them through the stages.
enum StagesCorpus {
    /// One recorded streaming exchange: the client's request and the provider's events.
    struct RecordedStream {
        var request: ChatRequest
        var events: [StreamEvent]
        /// Each chunk's JSON by its bytes, parsed once.
        var json: [String: JSONValue]
        var clientView: ClientView
        var lastUsageReport: TokenUsage

        init(request: ChatRequest, events: [StreamEvent]) {
            self.request = request
            self.events = events
            var json: [String: JSONValue] = [:]
            for event in events where event.kind == .chunk {
                let bytes = String(buffer: event.bytes)
                if json[bytes] == nil { json[bytes] = StagesCorpus.parse(event) }
            }
            self.json = json
            self.clientView = ClientView(events, json: json)
            self.lastUsageReport = StagesCorpus.lastUsageReport(in: events, json: json)
        }
    }

    static func parse(_ event: StreamEvent) -> JSONValue? {
        event.frame.data.flatMap { try? JSONValue(parsing: $0.readableBytesView) }
    }

    /// The repository root: this file is `<root>/Tests/RelayGatewayTests/StagesCorpusTests.swift`.
    static let repositoryRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().standardizedFileURL.path

    /// `<root>/../shared/corpus`.
    static let corpusFolder: String = URL(fileURLWithPath: repositoryRoot).deletingLastPathComponent()
        .appendingPathComponent("shared/corpus").standardizedFileURL.path

    static var corpusExists: Bool { FileManager.default.fileExists(atPath: corpusFolder + "/chat") }

    /// The chat cassettes whose recordings include a stream, by file name.
    static let streamingCassettes: [String] = {
        let folder = corpusFolder + "/chat"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        // A cheap look at the text; `corpusStream` requires a stream in each one it gets.
        return names.filter { $0.hasSuffix(".yaml") }.sorted().filter { name in
            let text = (try? String(contentsOfFile: folder + "/" + name, encoding: .utf8)) ?? ""
            return text.contains("text/event-stream") && text.contains(#""stream":true"#)
        }
    }()

    /// The successful streaming interactions of a cassette, decoded as the gateway decodes them.
    static func streams(in path: String) throws -> [RecordedStream] {
        try Cassette(path: path).interactions.compactMap { interaction in
            guard interaction.url.hasSuffix("/chat/completions"), interaction.status == 200,
                interaction.contentType?.lowercased().hasPrefix("text/event-stream") == true,
                let json = interaction.requestJSON, json["stream"]?.boolValue == true
            else { return nil }
            let request = try ChatRequest(body: ByteBuffer(string: json.serialized()))
            let events = try self.decode(interaction.responseBody)
            return RecordedStream(request: request, events: events)
        }
    }

    /// Body text → pieces as a provider writes them → SSE frames → events.
    static func decode(_ body: String) throws -> [StreamEvent] {
        let pieces = CassetteUpstream.eventPieces(of: ByteBuffer(string: body))
        var decoder = SSEDecoder()
        var buffer = ByteBuffer()
        var events: [StreamEvent] = []
        for var piece in pieces {
            buffer.writeBuffer(&piece)
            while let frame = try decoder.decode(buffer: &buffer) { events.append(StreamEvent(upstream: frame)) }
        }
        while let frame = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { events.append(StreamEvent(upstream: frame)) }
        return events
    }

    /// Runs `events` through keepalive and usage (interval too long to fire) and returns
    /// what a client would receive and the usage record.
    static func relay(_ events: [StreamEvent], request: ChatRequest) async throws -> ([StreamEvent], UsageRecord) {
        let record = RequestRecord(UsageRecord(requestID: "req_corpus", requestedModel: request.model, upstream: "cassette", stream: true, caller: nil))
        let context = StageContext(
            requestID: "req_corpus",
            requestedModel: request.model,
            upstreamName: "cassette",
            logger: Logger(label: "stages-corpus"),
            record: record
        )
        let pipeline = Pipeline(stages: [KeepaliveStage(interval: .seconds(3600)), UsageStage()])
        let handler = pipeline.handler { _, _ in ChatResponse(status: .ok, body: .events(EventStream(events))) }
        let response = try await handler(request, context)
        guard case .events(let stream) = response.body else { throw RelayError.internalError("the stages did not answer with a stream") }
        var sent: [StreamEvent] = []
        for try await event in stream { sent.append(event) }
        return (sent, record.snapshot)
    }

    /// What the keepalive stage keeps of a stream whose first chunk names the role.
    static func isMeaningful(_ event: StreamEvent) -> Bool {
        guard event.kind == .chunk, let facts = event.facts else { return event.kind != .comment }
        return facts.carriesPayload || facts.hasRole
    }

    /// The provider's last usage report with counts in it, read independently of the stage.
    static func lastUsageReport(in events: [StreamEvent], json: [String: JSONValue]) -> TokenUsage {
        var last = TokenUsage()
        for event in events where event.kind == .chunk {
            guard let chunk = json[String(buffer: event.bytes)] else { continue }
            var report = chunk["usage"]
            if report == nil || report == .null { report = chunk["x_groq"]?["usage"] }
            guard let report, report != .null else { continue }
            let tokens = TokenUsage(
                prompt: report["prompt_tokens"]?.intValue,
                completion: report["completion_tokens"]?.intValue,
                reasoning: report["completion_tokens_details"]?["reasoning_tokens"]?.intValue,
                cachedPrompt: report["prompt_tokens_details"]?["cached_tokens"]?.intValue,
                total: report["total_tokens"]?.intValue
            )
            if tokens.prompt != nil || tokens.completion != nil || tokens.total != nil { last = tokens }
        }
        return last
    }
}
