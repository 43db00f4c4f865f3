import Foundation
import HTTPTypes
import NIOCore
@testable import RelayCore
import Synchronization
import Testing

/// The request side and non-streaming answers: checked whole, blocked before the upstream
/// is called, redacted before it is sent.
@Suite("Moderation stage: requests and whole answers", .timeLimit(.minutes(1)))
struct ModerationInputTests {
    /// Runs the stage on `messages`; returns the request the upstream got (nil if not called).
    func send(_ stage: ModerationStage, messages: String, context: StageContext = moderationContext()) async throws -> ChatRequest? {
        let seen = Mutex<ChatRequest?>(nil)
        _ = try await stage.handle(try moderationRequest(stream: false, messages: messages), context: context) { request, _ in
            seen.withLock { $0 = request }
            return ChatResponse(status: .ok, body: .whole(ByteBuffer(string: "{}")))
        }
        return seen.withLock { $0 }
    }

    @Test("block: 400 content_policy_violation naming the rule, and the upstream is never called")
    func blockInput() async throws {
        let stage = patternStage([try nightingaleRule(.block)])
        let context = moderationContext()
        do {
            let sent = try await self.send(stage, messages: #"[{"role":"user","content":"Tell me about Project Nightingale"}]"#, context: context)
            Issue.record("the request went upstream: \(String(describing: sent))")
        } catch let error as RelayError {
            #expect(error.status == .badRequest)
            #expect(error.code == "content_policy_violation")
            #expect(error.type == "invalid_request_error")
            #expect(error.message == "The request was blocked by the content policy (rule 'codename').")
            #expect(!String(buffer: error.jsonBody).lowercased().contains("nightingale"))
        }
        #expect(context.record.snapshot.moderation == [ModerationVerdict(rule: "codename", action: .block, location: "input.messages[0]", hook: "patterns")])
    }

    @Test("redact: the upstream gets the masked text, in plain content and in multi-part text parts; other parts untouched")
    func redactInput() async throws {
        let stage = patternStage([try nightingaleRule(.redact)])
        let messages = #"""
            [{"role":"system","content":"You know project nightingale."},
             {"role":"user","content":[{"type":"text","text":"What is project nightingale?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},{"type":"text","text":"Say PROJECT NIGHTINGALE twice."}]}]
            """#
        let sent = try #require(try await self.send(stage, messages: messages))
        let parts = try #require(sent.messages[1]["content"]?.arrayValue)
        #expect(parts[0]["text"]?.stringValue == "What is [redacted]?")
        #expect(parts[1]["image_url"]?["url"]?.stringValue == "data:image/png;base64,AAAA")
        #expect(parts[2]["text"]?.stringValue == "Say [redacted] twice.")
        #expect(sent.messages[0]["content"]?.stringValue == "You know project nightingale.", "system messages are not checked by default")
        #expect(String(buffer: sent.body).contains("[redacted]"))
    }

    @Test("flag: the request goes upstream byte for byte, and the verdict is recorded")
    func flagInput() async throws {
        let stage = patternStage([try nightingaleRule(.flag)])
        let context = moderationContext()
        let messages = #"[{"role":"user","content":"project nightingale"}]"#
        let sent = try #require(try await self.send(stage, messages: messages, context: context))
        #expect(sent.body == (try moderationRequest(stream: false, messages: messages)).body)
        #expect(context.record.snapshot.moderation.map(\.summary) == ["flag codename in input.messages[0] (patterns)"])
    }

    @Test("Roles come from the config; rules may check only input or only output")
    func rolesAndDirections() async throws {
        let messages = #"[{"role":"system","content":"project nightingale"},{"role":"user","content":"hi"}]"#
        let bySystem = ModerationStage(rules: [try nightingaleRule(.block)], inputRoles: ["system", "user"])
        await #expect(throws: RelayError.self) { _ = try await self.send(bySystem, messages: messages) }
        let outputOnly = try PatternRule(name: "out", pattern: .literal("hi"), action: .block, checksInput: false)
        #expect(try await self.send(patternStage([outputOnly]), messages: messages) != nil)
        let noInput = ModerationStage(rules: [try nightingaleRule(.block)], inputRoles: [])
        #expect(try await self.send(noInput, messages: messages) != nil)
    }

    @Test("log_text: the offending text goes into the verdict only when the operator asks")
    func logText() async throws {
        let messages = #"[{"role":"user","content":"about Project Nightingale"}]"#
        let quiet = moderationContext()
        _ = try await self.send(patternStage([try nightingaleRule(.flag)]), messages: messages, context: quiet)
        #expect(quiet.record.snapshot.moderation.first?.text == nil)
        let loud = moderationContext()
        _ = try await self.send(ModerationStage(rules: [try nightingaleRule(.flag)], logText: true), messages: messages, context: loud)
        #expect(loud.record.snapshot.moderation.first?.text == "Project Nightingale")
    }

    // MARK: Whole answers

    static let answer = #"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"It is project nightingale.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#

    func answer(_ stage: ModerationStage, body: String = Self.answer, context: StageContext = moderationContext()) async throws -> String {
        let response = try await stage.handle(try moderationRequest(stream: false), context: context) { _, _ in
            ChatResponse(status: .ok, headerFields: [.contentType: "application/json"], body: .whole(ByteBuffer(string: body)))
        }
        guard case .whole(let bytes) = response.body else { throw ModerationTestFailure("a stream came back") }
        return String(buffer: bytes)
    }

    @Test("A non-streaming answer is checked whole: block empties it with content_filter, redact rewrites, flag leaves it byte for byte")
    func wholeAnswers() async throws {
        let blocked = try JSONValue(parsing: Array(try await self.answer(patternStage([try nightingaleRule(.block)])).utf8))
        let choice = try #require(blocked["choices"]?.arrayValue?.first)
        #expect(choice["finish_reason"]?.stringValue == "content_filter")
        #expect(choice["message"] == ["role": "assistant", "content": nil])
        #expect(blocked["usage"]?["total_tokens"]?.intValue == 11, "the rest of the answer stays")

        let redacted = try await self.answer(patternStage([try nightingaleRule(.redact)]))
        #expect(redacted.contains(#""content":"It is [redacted].""#))
        #expect(!redacted.contains("nightingale"))

        let context = moderationContext()
        #expect(try await self.answer(patternStage([try nightingaleRule(.flag)]), context: context) == Self.answer)
        #expect(context.record.snapshot.moderation.map(\.location) == ["output.content"])

        let tool = #"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":\"project nightingale\"}"}}]},"finish_reason":"tool_calls"}]}"#
        let toolRedacted = try await self.answer(patternStage([try nightingaleRule(.redact)], output: .init(toolArguments: true)), body: tool)
        #expect(toolRedacted.contains(#"{\"q\":\"[redacted]\"}"#))
    }

    @Test("Error answers pass unchecked")
    func errorsPass() async throws {
        let body = #"{"error":{"message":"project nightingale is rate limited"}}"#
        let response = try await patternStage([try nightingaleRule(.block)]).handle(try moderationRequest(stream: false), context: moderationContext()) { _, _ in
            ChatResponse(status: .tooManyRequests, body: .whole(ByteBuffer(string: body)))
        }
        guard case .whole(let bytes) = response.body else { throw ModerationTestFailure("a stream came back") }
        #expect(String(buffer: bytes) == body)
    }
}
