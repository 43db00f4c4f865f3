import Foundation
import HTTPTypes
import NIOCore
@testable import RelayCore
import Testing

/// The moderation stage on streams: a forbidden phrase split across chunks never reaches
/// the client, for every action, and what is clean goes on.
@Suite("Moderation stage: streamed output", .timeLimit(.minutes(1)))
struct ModerationStreamTests {
    // MARK: The phrase split across chunks

    @Test("block: the phrase split across two, three and one-character chunks never reaches the client; the stream ends with content_filter and [DONE]",
          arguments: Nightingale.splits.map(\.0))
    func blockSplit(split: String) async throws {
        let pieces = try #require(Nightingale.splits.first { $0.0 == split }?.1)
        let upstream = CountingUpstream(try ModerationWire.stream(pieces))
        let context = moderationContext()
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), upstream, context: context)
        #expect(!client.bytes.lowercased().contains("nightingale"))
        #expect(!client.bytes.contains("project night"))
        #expect(client.content == "The code name is ", "what came before the phrase went on; the held part of it did not")
        #expect(client.finishReasons == ["content_filter"])
        #expect(client.endsWithDone)
        let filter = try #require(client.events.dropLast().last)
        #expect(String(buffer: filter.bytes).contains(#""choices":[{"delta":{},"finish_reason":"content_filter","index":0}]"#))
        #expect(String(buffer: filter.bytes).contains(#""id":"chatcmpl-mod""#), "the envelope of the upstream's chunks")
        // The chunk that completed the phrase was the last one read: upstream is not read on.
        let completing = try #require(pieces.indices.first { pieces[...$0].joined().contains(Nightingale.phrase) })
        #expect(upstream.pulled == 1 + completing + 1)
        #expect(upstream.released, "the upstream stream was let go")
        let record = context.record.snapshot
        #expect(record.moderation == [ModerationVerdict(rule: "codename", action: .block, location: "output.content", hook: "patterns")])
        #expect(record.finishReason == "content_filter")
    }

    @Test("redact: the client sees the mask in place of the phrase, split across two, three and one-character chunks",
          arguments: Nightingale.splits.map(\.0))
    func redactSplit(split: String) async throws {
        let pieces = try #require(Nightingale.splits.first { $0.0 == split }?.1)
        let upstream = CountingUpstream(try ModerationWire.stream(pieces))
        let context = moderationContext()
        let client = try await moderate(patternStage([try nightingaleRule(.redact)]), upstream, context: context)
        #expect(!client.bytes.lowercased().contains("nightingale"))
        #expect(!client.bytes.contains("project night"))
        #expect(client.content == "The code name is [redacted], keep it secret.")
        #expect(client.finishReasons == ["stop"])
        #expect(client.endsWithDone)
        #expect(upstream.pulled == pieces.count + 4)
        #expect(context.record.snapshot.moderation == [ModerationVerdict(rule: "codename", action: .redact, location: "output.content", hook: "patterns")])
    }

    @Test("flag: the text passes unchanged (split across two, three and one-character chunks) and the verdict is recorded",
          arguments: Nightingale.splits.map(\.0))
    func flagSplit(split: String) async throws {
        let pieces = try #require(Nightingale.splits.first { $0.0 == split }?.1)
        let sent = try ModerationWire.stream(pieces)
        let upstream = CountingUpstream(sent)
        let context = moderationContext()
        let client = try await moderate(patternStage([try nightingaleRule(.flag)]), upstream, context: context)
        #expect(client.content == Nightingale.text)
        #expect(client.finishReasons == ["stop"])
        #expect(client.endsWithDone)
        #expect(context.record.snapshot.moderation == [ModerationVerdict(rule: "codename", action: .flag, location: "output.content", hook: "patterns")])
        if split == "two" {
            #expect(client.events.count == sent.count)
        } else {
            // Chunks that carried only held text were not sent; their text rode out on later ones.
            #expect(client.events.count < sent.count)
        }
    }

    @Test("Case folding: the phrase in any case is caught; case_sensitive rules catch only their own case")
    func caseFolding() async throws {
        let pieces = ["Say PROJECT Night", "ingale now, or Project nightingale."]
        let client = try await moderate(patternStage([try nightingaleRule(.redact)]), CountingUpstream(try ModerationWire.stream(pieces)))
        #expect(client.content == "Say [redacted] now, or [redacted].")
        let sensitive = try PatternRule(name: "exact", pattern: .literal("Nightingale"), action: .redact, replacement: "***", caseSensitive: true)
        let exact = try await moderate(patternStage([sensitive]), CountingUpstream(try ModerationWire.stream(["nightingale, Night", "ingale"])))
        #expect(exact.content == "nightingale, ***")
    }

    @Test("A regular expression split across chunks is redacted with its replacement; digits are held only while they may still match")
    func regexSplit() async throws {
        let card = try PatternRule(name: "card", pattern: .regex(#"\b\d{4}-\d{4}-\d{4}-\d{4}\b"#), action: .redact, replacement: "[card]")
        let pieces = ["Pay with 4111-1", "111-11", "11-1111 today, or 1234 5678."]
        let client = try await moderate(patternStage([card]), CountingUpstream(try ModerationWire.stream(pieces)))
        #expect(client.content == "Pay with [card] today, or 1234 5678.")
        #expect(!client.bytes.contains("4111"))
        let oneByOne = try await moderate(patternStage([card]), CountingUpstream(try ModerationWire.stream("card 4111-1111-1111-1111.".map { String($0) })))
        #expect(oneByOne.content == "card [card].")
    }

    @Test("Text that cannot be part of a match is not held: clean chunks pass byte for byte")
    func cleanChunksPassUntouched() async throws {
        let sent = try ModerationWire.stream(["Hello", " there, ", "how are you?"])
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream(sent))
        #expect(client.events.map { String(buffer: $0.bytes) } == sent.map { String(buffer: $0.bytes) })
    }

    @Test("A held prefix that turns out harmless rides out on the next chunk, with the rest of that chunk's JSON kept")
    func heldPrefixReleasedOnNextChunk() async throws {
        let sent = try ModerationWire.stream(["I like the pro", "ject nightjar", " a lot."])
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream(sent))
        #expect(client.content == "I like the project nightjar a lot.")
        let contents = client.events.compactMap { event -> String? in
            guard let data = event.frame.data, let json = try? JSONValue(parsing: data.readableBytesView) else { return nil }
            return json["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue
        }
        #expect(contents == ["", "I like the ", "project nightjar", " a lot."], "\"pro\" then \"project night\" were held, each for one chunk")
        let rewritten = String(buffer: client.events[2].bytes)
        #expect(rewritten.contains(#""obfuscation":"xyz""#) && rewritten.contains(#""logprobs":null"#), "other members kept: \(rewritten)")
    }

    @Test("A rewritten choice loses its logprobs, which would spell out the held tokens")
    func logprobsDropped() async throws {
        let logprobs = #"{"content":[{"token":"project","logprob":-0.1,"bytes":null,"top_logprobs":[]}]}"#
        let sent = try ChunkSamples.event(#"{\#(ModerationWire.envelope),"choices":[{"index":0,"delta":{"content":"a project"},"logprobs":\#(logprobs),"finish_reason":null}]}"#)
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream([sent, try ModerationWire.content(" plan")]))
        #expect(client.content == "a project plan")
        #expect(!client.bytes.contains("top_logprobs"))
        #expect(client.bytes.contains(#""logprobs":null"#))
    }

    @Test("What is held when the stream ends goes out before the finish chunk, and before the end of a stream without [DONE]")
    func heldTextFlushedAtTheEnd() async throws {
        let withFinish = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream(try ModerationWire.stream(["Ends with project"])))
        #expect(withFinish.content == "Ends with project")
        let kinds = withFinish.events.map { $0.facts?.finishReason ?? ($0.kind == .done ? "[DONE]" : "-") }
        #expect(kinds == ["-", "-", "-", "stop", "-", "[DONE]"], "role, \"Ends with \", release \"project\", finish, usage, [DONE]")
        // Cerebras ends without [DONE]; a stream may even end without a finish chunk.
        let bare = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream([try ModerationWire.content("so: project nigh")]))
        #expect(bare.content == "so: project nigh")
        #expect(!bare.endsWithDone)
    }

    @Test("A match completed only at the end of the stream still blocks")
    func blockOnFinalFlush() async throws {
        let card = try PatternRule(name: "digits", pattern: .regex(#"\d{3,}"#), action: .block)
        let client = try await moderate(patternStage([card]), CountingUpstream(try ModerationWire.stream(["code 12"])))
        #expect(client.content == "code 12", "two digits are not a match")
        let blocked = try await moderate(patternStage([card]), CountingUpstream(try ModerationWire.stream(["code 12", "3"])))
        #expect(blocked.content == "code ")
        #expect(blocked.finishReasons == ["content_filter"])
    }

    @Test("A longer rule forming around a shorter one wins: 'bad' is flagged, 'bad word' blocked")
    func longerMatchWins() async throws {
        let rules = [
            try PatternRule(name: "bad", pattern: .literal("bad"), action: .flag),
            try PatternRule(name: "bad-word", pattern: .literal("bad word"), action: .block),
        ]
        let context = moderationContext()
        let blocked = try await moderate(patternStage(rules), CountingUpstream(try ModerationWire.stream(["a bad", " word"])), context: context)
        #expect(blocked.finishReasons == ["content_filter"])
        #expect(context.record.snapshot.moderation.map(\.rule) == ["bad-word"])
        let flaggedContext = moderationContext()
        let flagged = try await moderate(patternStage(rules), CountingUpstream(try ModerationWire.stream(["a bad", " weather"])), context: flaggedContext)
        #expect(flagged.content == "a bad weather")
        #expect(flaggedContext.record.snapshot.moderation.map(\.rule) == ["bad"])
    }

    @Test("Reasoning and tool-call arguments are checked when configured, each field on its own")
    func reasoningAndToolArguments() async throws {
        let rule = try nightingaleRule(.redact)
        let sent = [
            try ModerationWire.chunk(#"{"role":"assistant","reasoning_content":"Think of project night"}"#),
            try ModerationWire.chunk(#"{"reasoning_content":"ingale."}"#),
            try ModerationWire.chunk(#"{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"search","arguments":"{\"q\":\"project nigh"}}]}"#),
            try ModerationWire.chunk(#"{"tool_calls":[{"index":0,"function":{"arguments":"tingale\"}"}}]}"#),
            try ModerationWire.finish("tool_calls"),
            ModerationWire.done,
        ]
        let all = ModerationOutputFields(content: true, reasoning: true, toolArguments: true)
        let client = try await moderate(patternStage([rule], output: all), CountingUpstream(sent))
        #expect(!client.bytes.lowercased().contains("nightingale"))
        #expect(client.bytes.contains(#""reasoning_content":"Think of "#))
        #expect(client.bytes.contains(#"[redacted]."#))
        let arguments = client.events.compactMap { event -> String? in
            guard let data = event.frame.data, let json = try? JSONValue(parsing: data.readableBytesView) else { return nil }
            return json["choices"]?.arrayValue?.first?["delta"]?["tool_calls"]?.arrayValue?.first?["function"]?["arguments"]?.stringValue
        }
        #expect(arguments.joined() == #"{"q":"[redacted]"}"#)
        #expect(client.bytes.contains(#""id":"call_1""#), "the tool call's first chunk still names it")
        // Without the options, reasoning and arguments pass as they came.
        let contentOnly = try await moderate(patternStage([rule]), CountingUpstream(sent))
        #expect(contentOnly.events.map { String(buffer: $0.bytes) } == sent.map { String(buffer: $0.bytes) })
    }

    @Test("reasoning_details text is held with the reasoning, and released into a chunk shaped like its items")
    func reasoningDetails() async throws {
        let sent = [
            try ChunkSamples.event(ChunkSamples.avianReasoningDetails.replacingOccurrences(of: #""The""#, with: #""project nightin""#)),
            try ModerationWire.chunk(#"{"reasoning_content":"gale","reasoning_details":[{"type":"reasoning.text","text":"gale","format":"unknown","index":0}]}"#),
            try ModerationWire.finish(),
        ]
        let client = try await moderate(patternStage([try nightingaleRule(.redact)], output: .init(reasoning: true)), CountingUpstream(sent))
        #expect(!client.bytes.contains("nightin"))
        #expect(client.bytes.contains(#""reasoning_details":[{"format":"unknown","index":0,"text":"[redacted]","type":"reasoning.text"}]"#), "\(client.bytes)")
        #expect(client.bytes.contains(#""reasoning_content":"[redacted]""#))
    }

    @Test("Choices are channels of their own; an upstream error event drops what is held")
    func choicesAndErrors() async throws {
        let sent = [
            try ModerationWire.chunk(#"{"content":"first project"}"#, index: 0),
            try ModerationWire.chunk(#"{"content":"second project"}"#, index: 1),
            try ModerationWire.chunk(#"{"content":" plan"}"#, index: 0),
            try ChunkSamples.event(block: "data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
        ]
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream(sent))
        #expect(client.content == "first second project plan")
        #expect(client.events.last?.kind == .error)
        #expect(!client.bytes.contains("second project\""), "choice 1's held \"project\" was dropped with the error")
    }

    @Test("Comments, heartbeats and usage-only chunks pass at once, even while text is held")
    func nonTextEventsPass() async throws {
        let comment = try ChunkSamples.event(block: ": OPENROUTER PROCESSING\n\n")
        let sent = [try ModerationWire.content("a project"), comment, StreamEvent.commentHeartbeat(), try ModerationWire.content(" b")]
        let client = try await moderate(patternStage([try nightingaleRule(.block)]), CountingUpstream(sent))
        #expect(client.events.map(\.kind) == [.chunk, .comment, .heartbeat, .chunk])
        #expect(client.content == "a project b")
    }

    @Test("Nothing is held beyond hold_back: a regex that could match forever releases its oldest text")
    func holdBackBound() async throws {
        let greedy = try PatternRule(name: "secret-tail", pattern: .regex("secret:[a-z ]*!"), action: .block)
        let text = "secret: " + String(repeating: "abc ", count: 30)
        let stage = patternStage([greedy], holdBack: 16)
        let upstream = CountingUpstream([try ModerationWire.role()] + (try text.map { try ModerationWire.content(String($0)) }))
        let response = try await stage.handle(try moderationRequest(), context: moderationContext()) { _, _ in
            ChatResponse(status: .ok, body: .events(upstream.stream))
        }
        guard case .events(let events) = response.body else { throw ModerationTestFailure("no stream") }
        var received = ""
        var iterator = events.makeAsyncIterator()
        while let event = try await iterator.next() {
            received += ModerationClientView(events: [event]).content
            #expect(upstream.pulled - 1 - received.count <= 16, "at most hold_back characters behind")
        }
        #expect(received == text)
    }
}
