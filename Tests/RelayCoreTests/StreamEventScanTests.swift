import NIOCore
@testable import RelayCore
import Testing

/// The chunk scanner (the hot path: facts read straight from the bytes) against the
/// reference (a parsed tree and ``ChunkFacts/init(_:)``), on awkward shapes. The whole
/// corpus is compared in RelayGatewayTests' JSONParserCorpusTests.
@Suite("Stream events: the scanner gives the reference's answers")
struct StreamEventScanTests {
    /// What an upstream event is, by the tree: the definition the scanner must match.
    static func reference(_ data: String) -> (kind: StreamEvent.Kind, facts: ChunkFacts?) {
        guard data.first == "{", let result = ChunkScanner.reference(Array(data.utf8)) else { return (.other, nil) }
        return (result.kind, result.facts)
    }

    static func scanned(_ data: String) -> StreamEvent {
        StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(data)\n\n"), data: ByteBuffer(string: data)))
    }

    static func scanned(_ data: String, envelope: inout ChunkEnvelope) -> StreamEvent {
        StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(data)\n\n"), data: ByteBuffer(string: data)), envelope: &envelope)
    }

    @Test("Awkward shapes", arguments: [
        #"{"choices":"x"}"#, #"{"object":"chat.completion.chunk"}"#, #"{"object":"other","id":"a"}"#, #"{"error":{"message":"m"}}"#,
        #"{"error":null,"choices":[]}"#, #"{"usage":null,"x_groq":{"usage":{"prompt_tokens":1}}}"#,
        #"{"usage":{"prompt_tokens":2},"x_groq":{"usage":{"prompt_tokens":1}},"choices":[]}"#, #"{"x_groq":"no","choices":[]}"#,
        #"  { "choices" : [ 1 , { "delta" : { "content" : "a" } } , "s" , { "delta" : { "content" : "b" }, "finish_reason": "stop" } ] }  "#,
        #"{"choices":[]} x"#, #"{"choices":[{"delta":{"foo":[{}, "", null, []]}}]}"#, #"{"choices":[{"delta":{"foo":[{}, "x"]}}]}"#,
        #"{"choices":[{"delta":{"role":"","content":null,"tool_calls":[]}}],"extra":{"a":[null]}}"#,
        #"{"choices":[{"delta":{"role":null}, "logprobs":{"content":[]}}]}"#, #"{"choices":[{"delta":{}, "logprobs":{"content":[1]}}]}"#,
        #"{"choices":[{"delta":"text","finish_reason":5,"native_finish_reason":"STOP","content_filter_results":{"a":{"f":false}}}]}"#,
        #"{"choices":[],"created":-5}"#, #"{"choices":[],"created":1.5}"#, #"{"choices":[],"created":"1"}"#, #"{"choices":[],"model":7,"id":null}"#,
        #"{"choices":[{"delta":{"content":"\u00e9\n\"q\""}}]}"#, #"{"choices":[{"delta":{"reasoning":"\\"}}]}"#,
        #"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"},"finish_reason":"length"}]}"#,
        #"{"choices":[{"delta":{"content":"a"}}"#, #"{"choices":[{"delta":{"content":"a\u12"}}]}"#, "{}", "{ }", #"{"a":tru}"#,
        #"{"choices":[{"delta":{"audio":{"id":"x"}}}],"system_fingerprint":null,"service_tier":"default","obfuscation":"zz","provider":"p"}"#,
        // "object" read in place when its bytes are the chunk's, decoded otherwise.
        #"{"object":"chat.completion.chunk2"}"#, #"{"object":"chat.completion.chun"}"#, #"{"object":"chat.completion.chunk"}"#,
        #"{"object":"chat.completion.chunk""}"#, #"{"object":"chat.completion.chunk"#,
        // An error beside the choices is payload, an empty one is not (see errorChunkCarriesPayload).
        #"{"choices":[],"error":1}"#,
        #"{"choices":[{"index":0,"delta":{},"finish_reason":"error"}],"error":{"message":"Provider returned error","code":502}}"#,
        #"{"object":"chat.completion.chunk","choices":[{"delta":{}}],"error":{}}"#,
        #"{"object":"chat.completion.chunk","choices":[{"delta":{}}],"error":null}"#,
        #"{"error":{"message":"rate limited","code":429}}"#,
    ])
    func awkward(_ data: String) {
        let event = Self.scanned(data)
        let reference = Self.reference(data)
        #expect(event.kind == reference.kind)
        #expect(event.facts == reference.facts)
    }

    @Test("Every chunk sample", arguments: [
        ChunkSamples.xaiRole, ChunkSamples.xaiEmpty, ChunkSamples.xaiContent, ChunkSamples.xaiFinish, ChunkSamples.xaiUsage,
        ChunkSamples.xaiReasoningContent, ChunkSamples.xaiToolCall, ChunkSamples.openAIRole, ChunkSamples.openAIContent,
        ChunkSamples.openAIUsage, ChunkSamples.azurePromptFilter, ChunkSamples.azureRole, ChunkSamples.azureFinish,
        ChunkSamples.openRouterEncryptedReasoning, ChunkSamples.openRouterToolCallStart, ChunkSamples.openRouterFinish,
        ChunkSamples.openRouterEmpty, ChunkSamples.openRouterLateUsage, ChunkSamples.avianReasoningDetails,
        ChunkSamples.groqFinishWithUsage, ChunkSamples.groqFinishXGroqOnly, ChunkSamples.groqToolCall,
        ChunkSamples.zaiFinishWithUsage, ChunkSamples.zaiToolCallWithFinish,
    ])
    func samples(_ data: String) {
        let event = Self.scanned(data)
        let reference = Self.reference(data)
        #expect(event.kind == reference.kind)
        #expect(event.facts == reference.facts)
        #expect(event.kind == .chunk)
    }

    /// A name given twice counts once, the last time, as in the tree and the client's JSON
    /// parser: the scanner must not add the repeats up (what moderation reads must be what
    /// the client shows). The first is the fuzzer's finding (Fuzz/findings/json-repeated-choices.json).
    @Test("Repeated member names: the last one counts", arguments: [
        #"{"id":"a","object":"chat.completion.cf","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":","}}],"system_fingerprint":"fp","created":1,"model":"m","choices":[{"index":0,"delta":{"content":","}}],"system_fingerprint":"fp2"}"#,
        #"{"choices":[{"delta":{"content":"bad word"}}],"choices":[{"delta":{"content":"fine"}}]}"#,
        #"{"choices":[{"delta":{"content":"first","content":"second"}}]}"#,
        #"{"choices":[{"finish_reason":"length","finish_reason":"stop","delta":{}}]}"#,
        #"{"choices":[],"extra":{"a":"x","a":""}}"#,
        #"{"choices":[],"usage":{"prompt_tokens":1},"usage":null}"#,
        #"{"choices":[],"x_groq":{"usage":{"prompt_tokens":1},"usage":null}}"#,
        #"{"choices":[{"delta":{"con\u0074ent":"escaped","content":"plain"}}]}"#,
        #"{"choices":[],"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17}"#,
    ])
    func repeatedNames(_ data: String) {
        let event = Self.scanned(data)
        let reference = Self.reference(data)
        #expect(event.kind == reference.kind)
        #expect(event.facts == reference.facts)
    }

    /// `error` is no envelope member: beside `choices` it is payload, as in the reference
    /// (the fuzzer's finding, Fuzz/findings/json-error-beside-choices.json: the scanner
    /// skipped it and called the chunk empty, so keepalive would have dropped it).
    @Test("A chunk with an error in it is never an empty keepalive")
    func errorChunkCarriesPayload() {
        #expect(Self.scanned(#"{"choices":[],"error":1}"#).facts?.carriesPayload == true)
        #expect(Self.scanned(#"{"choices":[{"delta":{}}],"error":{"code":502}}"#).facts?.carriesPayload == true)
        #expect(Self.scanned(#"{"choices":[{"delta":{}}],"error":null}"#).facts?.carriesPayload == false)
    }

    /// A stream's reader keeps the chunk before's `id` and `model` (``ChunkEnvelope``) and the
    /// scanner hands them back when the bytes repeat: every answer must still be the
    /// reference's, when they change, when one is a prefix of the other, when the one
    /// remembered came from escapes (its text then differs from its bytes), and after a
    /// chunk without them.
    @Test("Remembering the envelope from chunk to chunk changes no answer")
    func rememberedEnvelope() {
        let stream = [
            #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorK","model":"gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"a"}}]}"#,
            #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorK","model":"gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"b"}}]}"#,
            #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorKx","model":"gpt-4o-mini-2024-07-18","choices":[]}"#,
            #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCor","model":"gpt-4o-mini","choices":[]}"#,
            #"{"id":"","model":7,"choices":[]}"#,
            #"{"id":"","model":"gpt-4o-mini","choices":[]}"#,
            #"{"choices":[{"delta":{"content":"none"}}]}"#,
            #"{"id":"a\"b","model":"m\\n","choices":[]}"#,
            #"{"id":"a\"b","model":"m\\n","choices":[]}"#,
            #"{"id":"a"b","model":"m\n","choices":[]}"#,
            #"{"id":"a\u0022b","model":"m\u005cn","choices":[]}"#,
            #"{"id":"é","model":"gpt-4o-mini","choices":[]}"#,
            #"{"id":"é","model":"gpt-4o-mini","choices":[]}"#,
        ]
        var envelope = ChunkEnvelope()
        for data in stream {
            let event = Self.scanned(data, envelope: &envelope)
            let reference = Self.reference(data)
            #expect(event.kind == reference.kind, "\(data)")
            #expect(event.facts == reference.facts, "\(data)")
        }
    }

    /// A chunk read after another that left a template (``ChunkTemplate``): when its bytes
    /// are the template's but for skipped strings' text, each as empty as it was, it shares
    /// the template's facts without a scan; otherwise it is scanned. Either way its answer
    /// is the reference's.
    @Test("A chunk that repeats the one before but for skipped strings' text shares its facts", arguments: [
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"bcd"}}]}"#, true),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":""}}]}"#, false),
        (#"{"choices":[{"delta":{"content":""}}]}"#, #"{"choices":[{"delta":{"content":"x"}}]}"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"a\"b"}}]}"#, true),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"a\\"}}]}"#, true),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"\u00e9\n"}}]}"#, true),
        // A quote escaped in the text; then one that ends the string elsewhere.
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"a\"}}]}"}}]}"#, true),
        (#"{"choices":[{"delta":{"content":"a","x":"b"}}]}"#, #"{"choices":[{"delta":{"content":"a\","x":"b"}}]}"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"a\u0001"}}]}"#, true),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, "{\"choices\":[{\"delta\":{\"content\":\"a\u{01}\"}}]}", false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"b"}}]} "#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"b"}}]}x"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"b"}}]"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"choices":[{"delta":{"content":"b"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}],"obfuscation":"xy"}"#, #"{"choices":[{"delta":{"content":"b"}}],"obfuscation":"xyzzy"}"#, true),
        (#"{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#, #"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#, false),
        (#"{"id":"1","choices":[{"delta":{"content":"a"}}]}"#, #"{"id":"2","choices":[{"delta":{"content":"a"}}]}"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}],"created":1}"#, #"{"choices":[{"delta":{"content":"a"}}],"created":2}"#, false),
        // A skipped member that is not the relay's: its emptiness is payload.
        (#"{"choices":[{"delta":{"annotations":"x"}}]}"#, #"{"choices":[{"delta":{"annotations":""}}]}"#, false),
        (#"{"choices":[{"delta":{"annotations":"x"}}]}"#, #"{"choices":[{"delta":{"annotations":"y"}}]}"#, true),
        (#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":""}}]}}]}"#, #"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}}]}"#, false),
        (#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{"}}]}}]}"#, #"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"1}"}}]}}]}"#, true),
        // Neither a usage chunk nor one that names a member twice leaves a template.
        (#"{"choices":[],"usage":{"total_tokens":1},"obfuscation":"a"}"#, #"{"choices":[],"usage":{"total_tokens":1},"obfuscation":"b"}"#, false),
        (#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#, #"{"choices":[{"delta":{"content":"a","content":"c"}}]}"#, false),
        (#"{"choices":[{"delta":{"content":"a"}}]}"#, #"{"error":{"message":"m"}}"#, false),
    ])
    func template(_ first: String, _ second: String, shares: Bool) {
        var envelope = ChunkEnvelope()
        let before = Self.scanned(first, envelope: &envelope)
        let event = Self.scanned(second, envelope: &envelope)
        let reference = Self.reference(second)
        #expect(event.kind == reference.kind)
        #expect(event.facts == reference.facts)
        #expect(event.sharesFacts(with: before) == shares)
    }

    @Test("A chunk larger than a template may be is read in full each time")
    func largeChunksLeaveNoTemplate() {
        let text = String(repeating: "x", count: ChunkTemplate.maximumSize)
        let data = #"{"choices":[{"delta":{"content":"\#(text)"}}]}"#
        var envelope = ChunkEnvelope()
        let first = Self.scanned(data, envelope: &envelope)
        let second = Self.scanned(data, envelope: &envelope)
        #expect(envelope.template.facts == nil)
        #expect(!second.sharesFacts(with: first))
        #expect(second.facts == Self.reference(data).facts)
    }

    @Test("Objects without repeats stay on the scanner's path")
    func distinctNamesAreScanned() throws {
        let data = Array(#"{"id":"a","choices":[{"delta":{"content":"x"},"index":0}],"object":"chat.completion.chunk"}"#.utf8)
        let repeated = data.withUnsafeBufferPointer { buffer in
            var parser = JSONParser(buffer)
            _ = try? parser.distinctMembers { parser, _ throws(JSONParser.Failure) in _ = try parser.skipValue() }
            return parser.sawRepeatedName
        }
        #expect(!repeated)
    }
}
