import Testing

@testable import RelayCore

@Suite("ChunkFacts over real provider chunks")
struct ChunkFactsTests {
    /// What one chunk should be read as.
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var json: String
        var content: Bool
        var payload: Bool
        var role: Bool
        var finish: String? = nil
        var usage: Bool = false
        var noChoices: Bool = false
        var testDescription: String { self.name }
    }

    static let cases: [Case] = [
        Case(name: "xAI role chunk", json: ChunkSamples.xaiRole, content: false, payload: false, role: true),
        Case(name: "xAI delta:{} keepalive", json: ChunkSamples.xaiEmpty, content: false, payload: false, role: false),
        Case(name: "xAI content", json: ChunkSamples.xaiContent, content: true, payload: true, role: false),
        Case(name: "xAI finish", json: ChunkSamples.xaiFinish, content: true, payload: true, role: false, finish: "stop"),
        Case(name: "xAI usage-only choices:[]", json: ChunkSamples.xaiUsage, content: false, payload: true, role: false, usage: true, noChoices: true),
        Case(name: "xAI reasoning_content", json: ChunkSamples.xaiReasoningContent, content: true, payload: true, role: true),
        Case(name: "xAI whole tool call", json: ChunkSamples.xaiToolCall, content: true, payload: true, role: false),
        Case(name: "OpenAI role chunk with refusal:null, usage:null", json: ChunkSamples.openAIRole, content: false, payload: false, role: true),
        Case(name: "OpenAI content with usage:null", json: ChunkSamples.openAIContent, content: true, payload: true, role: false),
        Case(name: "OpenAI usage-only choices:[]", json: ChunkSamples.openAIUsage, content: false, payload: true, role: false, usage: true, noChoices: true),
        Case(name: "Azure prompt_filter_results with choices:[]", json: ChunkSamples.azurePromptFilter, content: false, payload: true, role: false, noChoices: true),
        Case(name: "Azure role chunk with content_filter_results:{}", json: ChunkSamples.azureRole, content: false, payload: false, role: true),
        Case(name: "Azure finish", json: ChunkSamples.azureFinish, content: true, payload: true, role: false, finish: "stop"),
        Case(name: "OpenRouter empty reasoning chunk", json: ChunkSamples.openRouterEmpty, content: false, payload: false, role: true),
        Case(name: "OpenRouter encrypted reasoning_details", json: ChunkSamples.openRouterEncryptedReasoning, content: true, payload: true, role: true),
        Case(name: "OpenRouter tool call start (arguments \"\")", json: ChunkSamples.openRouterToolCallStart, content: true, payload: true, role: true),
        Case(name: "OpenRouter finish with native_finish_reason", json: ChunkSamples.openRouterFinish, content: true, payload: true, role: true, finish: "tool_calls"),
        Case(name: "older OpenRouter usage after finish", json: ChunkSamples.openRouterLateUsage, content: false, payload: true, role: true, usage: true),
        Case(name: "Avian reasoning_details and reasoning_content", json: ChunkSamples.avianReasoningDetails, content: true, payload: true, role: true),
        Case(name: "Groq finish with x_groq.usage and usage", json: ChunkSamples.groqFinishWithUsage, content: true, payload: true, role: false, finish: "tool_calls", usage: true),
        Case(name: "Groq finish with only x_groq.usage", json: ChunkSamples.groqFinishXGroqOnly, content: true, payload: true, role: false, finish: "tool_calls", usage: true),
        Case(name: "Groq whole tool call", json: ChunkSamples.groqToolCall, content: true, payload: true, role: false),
        Case(name: "Z.ai finish with usage inside", json: ChunkSamples.zaiFinishWithUsage, content: true, payload: true, role: true, finish: "tool_calls", usage: true),
        Case(name: "Z.ai tool call and finish_reason in one chunk", json: ChunkSamples.zaiToolCallWithFinish, content: true, payload: true, role: true, finish: "tool_calls"),
    ]

    @Test("Classifies the chunk", arguments: cases)
    func classifies(_ sample: Case) throws {
        let facts = try ChunkSamples.facts(sample.json)
        #expect(facts.carriesContent == sample.content, "carriesContent")
        #expect(facts.carriesPayload == sample.payload, "carriesPayload")
        #expect(facts.hasRole == sample.role, "hasRole")
        #expect(facts.finishReason == sample.finish, "finishReason")
        #expect((facts.usage != nil) == sample.usage, "usage")
        #expect(facts.hasNoChoices == sample.noChoices, "hasNoChoices")
    }

    @Test("Content always implies payload")
    func contentImpliesPayload() throws {
        for sample in Self.cases {
            let facts = try ChunkSamples.facts(sample.json)
            #expect(!facts.carriesContent || facts.carriesPayload, "\(sample.name)")
        }
    }

    @Test("usage is the top-level object; Groq's x_groq.usage when that is all there is")
    func usageValues() throws {
        let groq = try ChunkSamples.object(ChunkSamples.groqFinishWithUsage)
        #expect(try ChunkSamples.facts(ChunkSamples.groqFinishWithUsage).usage == groq["usage"])
        let groqOnly = try ChunkSamples.object(ChunkSamples.groqFinishXGroqOnly)
        let usage = try #require(try ChunkSamples.facts(ChunkSamples.groqFinishXGroqOnly).usage)
        #expect(usage == groqOnly["x_groq"]?["usage"])
        #expect(usage["total_tokens"]?.intValue == 259)
        let xai = try #require(try ChunkSamples.facts(ChunkSamples.xaiUsage).usage)
        #expect(xai["completion_tokens_details"]?["reasoning_tokens"]?.intValue == 123)
    }

    @Test("OpenAI's usage:null on an ordinary chunk is no usage")
    func usageNull() throws {
        #expect(try ChunkSamples.facts(ChunkSamples.openAIContent).usage == nil)
        #expect(try ChunkSamples.facts(ChunkSamples.openAIRole).usage == nil)
    }

    @Test("The model is read as the upstream reported it")
    func model() throws {
        #expect(try ChunkSamples.facts(ChunkSamples.xaiRole).model == "grok-4-fast-reasoning")
        #expect(try ChunkSamples.facts(ChunkSamples.azurePromptFilter).model == "")
        #expect(ChunkFacts(["choices": []]).model == nil)
    }

    @Test("Several choices: the first finish_reason wins")
    func severalChoices() {
        let facts = ChunkFacts([
            "choices": [
                ["index": 0, "delta": ["content": "Hel"], "finish_reason": nil],
                ["index": 1, "delta": ["content": "lo"], "finish_reason": "length"],
                ["index": 2, "delta": [:], "finish_reason": "stop"],
            ]
        ])
        #expect(facts.finishReason == "length")
        #expect(facts.carriesContent)
    }

    static let unknownMembers: [(String, JSONValue)] = [
        ("an unknown delta member", ["choices": [["index": 0, "delta": ["annotations": [["type": "url_citation"]]]]]]),
        ("logprobs", ["choices": [["index": 0, "delta": [:], "logprobs": ["content": [["token": "a"]]]]]]),
        ("an unknown choice member", ["choices": [["index": 0, "delta": [:], "content_filter_results": ["hate": ["filtered": true]]]]]),
        ("an unknown top-level member", ["choices": [["index": 0, "delta": [:]]], "citations": ["https://example.com"]]),
    ]

    @Test("What the relay does not know is payload, not content", arguments: unknownMembers)
    func unknownIsPayload(_ name: String, _ chunk: JSONValue) throws {
        let facts = ChunkFacts(try #require(chunk.objectValue))
        #expect(facts.carriesPayload, "\(name)")
        #expect(!facts.carriesContent, "\(name)")
    }

    static let emptyMembers: [JSONValue] = [
        ["choices": [["index": 0, "delta": ["annotations": []]]]],
        ["choices": [["index": 0, "delta": [:], "content_filter_results": [:]]], "citations": [], "extra": nil],
        ["choices": [["index": 0, "delta": ["content": nil, "refusal": nil, "tool_calls": []]]]],
    ]

    @Test("Empty values of unknown members carry nothing", arguments: emptyMembers)
    func emptyUnknownIsNothing(_ chunk: JSONValue) throws {
        let facts = ChunkFacts(try #require(chunk.objectValue))
        #expect(!facts.carriesPayload)
        #expect(!facts.carriesContent)
    }
}
