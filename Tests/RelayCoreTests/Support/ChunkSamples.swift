import NIOCore
import RelayCore
import Testing

/// Chunks as providers send them. Lines marked "corpus" are copied byte for byte from
/// ../shared/corpus (file named after it); the others are built from what QUIRKS.md
/// describes where no HEAD cassette holds an example.
enum ChunkSamples {
    // corpus: seed-xai-grok-4-fast-keepalive.yaml
    static let xaiRole = #"{"id":"d902f9b5-9a22-96b1-4b9c-97175fa193ee_us-east-1","object":"chat.completion.chunk","created":1758884701,"model":"grok-4-fast-reasoning","choices":[{"index":0,"delta":{"role":"assistant"}}],"system_fingerprint":"fp_9362061f30"}"#
    static let xaiEmpty = #"{"id":"d902f9b5-9a22-96b1-4b9c-97175fa193ee_us-east-1","object":"chat.completion.chunk","created":1758884701,"model":"grok-4-fast-reasoning","choices":[{"index":0,"delta":{}}],"system_fingerprint":"fp_9362061f30"}"#
    static let xaiContent = #"{"id":"d902f9b5-9a22-96b1-4b9c-97175fa193ee_us-east-1","object":"chat.completion.chunk","created":1758884702,"model":"grok-4-fast-reasoning","choices":[{"index":0,"delta":{"content":"Olá"}}],"system_fingerprint":"fp_9362061f30"}"#
    static let xaiFinish = #"{"id":"d902f9b5-9a22-96b1-4b9c-97175fa193ee_us-east-1","object":"chat.completion.chunk","created":1758884702,"model":"grok-4-fast-reasoning","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"system_fingerprint":"fp_9362061f30"}"#
    static let xaiUsage = #"{"id":"d902f9b5-9a22-96b1-4b9c-97175fa193ee_us-east-1","object":"chat.completion.chunk","created":1758884702,"model":"grok-4-fast-reasoning","choices":[],"usage":{"prompt_tokens":126,"completion_tokens":2,"total_tokens":251,"prompt_tokens_details":{"text_tokens":126,"audio_tokens":0,"image_tokens":0,"cached_tokens":125},"completion_tokens_details":{"reasoning_tokens":123,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0},"system_fingerprint":"fp_9362061f30"}"#

    // corpus: chat/TestOpenAICompatObjectGeneration__xai-grok-code-fast__*_streaming.yaml
    static let xaiReasoningContent = #"{"id":"a02db2b3-11e9-1b57-2f5b-c73c0809d2cf","object":"chat.completion.chunk","created":1773345682,"model":"grok-code-fast-1","choices":[{"index":0,"delta":{"reasoning_content":"The","role":"assistant"}}],"system_fingerprint":"fp_99052e9f23"}"#
    // corpus: chat/TestOpenAICompatibleCommon__xai-grok-code-fast__multi_tool_streaming.yaml (whole call in one chunk)
    static let xaiToolCall = #"{"id":"34fd1eff-a2d7-3ed8-5cf5-1ff1333419bd","object":"chat.completion.chunk","created":1773345610,"model":"grok-code-fast-1","choices":[{"index":0,"delta":{"tool_calls":[{"id":"call_47876210","function":{"name":"add","arguments":"{\"a\":2,\"b\":3}"},"index":0,"type":"function"}]}}],"system_fingerprint":"fp_99052e9f23"}"#

    // corpus: chat/TestOpenAICommon__openai-gpt-4o-mini__simple_streaming.yaml
    static let openAIRole = #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorK","object":"chat.completion.chunk","created":1782321902,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_bbc23ca3d7","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"yS7A7FhhV"}"#
    static let openAIContent = #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorK","object":"chat.completion.chunk","created":1782321902,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_bbc23ca3d7","choices":[{"index":0,"delta":{"content":"Olá"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"TuWnytCa"}"#
    static let openAIUsage = #"{"id":"chatcmpl-DuLdOuviL2tiVxMim6HmX4YMnCorK","object":"chat.completion.chunk","created":1782321902,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_bbc23ca3d7","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"eScNPVmGYP3"}"#

    // corpus: chat/TestAzureCommon__azure-gpt-5-mini__simple_streaming.yaml (keys in alphabetical order)
    static let azurePromptFilter = #"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"detected":false,"filtered":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#
    static let azureRole = #"{"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1782321614,"id":"chatcmpl-DuLYkWnz0OixBh4yGRX57RgoH5wVP","model":"gpt-5-mini-2025-08-07","obfuscation":"ZKaqV","object":"chat.completion.chunk","service_tier":"default","system_fingerprint":null,"usage":null}"#
    static let azureFinish = #"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1782321614,"id":"chatcmpl-DuLYkWnz0OixBh4yGRX57RgoH5wVP","model":"gpt-5-mini-2025-08-07","obfuscation":"G","object":"chat.completion.chunk","service_tier":"default","system_fingerprint":null,"usage":null}"#

    // corpus: chat/TestOpenRouterCommon__gemini__multi_tool_streaming.yaml
    static let openRouterEncryptedReasoning = #"{"id":"gen-1777319833-jB4BU87kBaOluZRvZKV0","object":"chat.completion.chunk","created":1777319833,"model":"google/gemini-3.1-flash-lite-preview-20260303","provider":"Google AI Studio","choices":[{"index":0,"delta":{"content":"","role":"assistant","reasoning":null,"reasoning_details":[{"type":"reasoning.encrypted","data":"EjQKMgEMOdbHWldpUxTsd0Brk0yjwpnFnPDRapRvW3qAoQvzR8EwucYBbW85Tqib6JYSYIrC","format":"google-gemini-v1","index":0}]},"finish_reason":null,"native_finish_reason":null}]}"#
    // corpus: chat/TestOpenRouterCommon__gemini__tool_streaming.yaml (incremental tool call, then a finish chunk)
    static let openRouterToolCallStart = #"{"id":"gen-1777319826-N0ngyT6DvdOcsIp1uOkF","object":"chat.completion.chunk","created":1777319826,"model":"google/gemini-3.1-flash-lite-preview-20260303","provider":"Google AI Studio","choices":[{"index":0,"delta":{"content":null,"role":"assistant","tool_calls":[{"index":0,"id":"tool_weather_nNBvDVuJXrZZDwEjuOoj","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null,"native_finish_reason":null}]}"#
    static let openRouterFinish = #"{"id":"gen-1777319826-N0ngyT6DvdOcsIp1uOkF","object":"chat.completion.chunk","created":1777319826,"model":"google/gemini-3.1-flash-lite-preview-20260303","provider":"Google AI Studio","choices":[{"index":0,"delta":{"content":"","role":"assistant","reasoning":null},"finish_reason":"tool_calls","native_finish_reason":"STOP"}]}"#
    // QUIRKS.md: OpenRouter relaying xAI's hidden reasoning as empty chunks (history only).
    static let openRouterEmpty = #"{"id":"gen-1758884701-abcdefghijklmnop","provider":"xAI","model":"x-ai/grok-4-fast","object":"chat.completion.chunk","created":1758884701,"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":null,"reasoning_details":[]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}"#
    // QUIRKS.md: older OpenRouter usage chunk after the finish chunk, with a non-empty choices array.
    static let openRouterLateUsage = #"{"id":"gen-1758884701-abcdefghijklmnop","provider":"xAI","model":"x-ai/grok-4-fast","object":"chat.completion.chunk","created":1758884701,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.0001,"is_byok":false}}"#

    // corpus: chat/TestOpenAICompatibleCommon__avian-kimi__multi_tool_streaming.yaml (JSON with spaces)
    static let avianReasoningDetails = #"{"id": "gen-1773932884-wGz1eX8aEKiwuYKtVVBo", "object": "chat.completion.chunk", "created": 1773932884, "model": "moonshotai/kimi-k2.5", "choices": [{"index": 0, "delta": {"content": "", "role": "assistant", "reasoning_details": [{"type": "reasoning.text", "text": "The", "format": "unknown", "index": 0}], "reasoning_content": "The"}, "finish_reason": null, "native_finish_reason": null}]}"#

    // corpus: chat/TestOpenAICompatibleCommon__groq-kimi-k2__multi_tool_streaming.yaml
    static let groqFinishWithUsage = #"{"id":"chatcmpl-a74ad02f-fb60-461d-8042-24ab0b962b51","object":"chat.completion.chunk","created":1773345615,"model":"moonshotai/kimi-k2-instruct-0905","system_fingerprint":"fp_05df423bab","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"x_groq":{"id":"req_01kkht5b3yfqdt97w99bdntjns","usage":{"queue_time":0.200019293,"prompt_tokens":201,"prompt_time":0.022569048,"completion_tokens":58,"completion_time":0.168140587,"total_tokens":259,"total_time":0.190709635}},"usage":{"queue_time":0.200019293,"prompt_tokens":201,"prompt_time":0.022569048,"completion_tokens":58,"completion_time":0.168140587,"total_tokens":259,"total_time":0.190709635}}"#
    // The same with only x_groq.usage (as the HF router relays Groq).
    static let groqFinishXGroqOnly = #"{"id":"chatcmpl-a74ad02f-fb60-461d-8042-24ab0b962b51","object":"chat.completion.chunk","created":1773345615,"model":"moonshotai/kimi-k2-instruct-0905","system_fingerprint":"fp_05df423bab","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"x_groq":{"id":"req_01kkht5b3yfqdt97w99bdntjns","usage":{"prompt_tokens":201,"completion_tokens":58,"total_tokens":259}}}"#
    static let groqToolCall = #"{"id":"chatcmpl-a74ad02f-fb60-461d-8042-24ab0b962b51","object":"chat.completion.chunk","created":1773345615,"model":"moonshotai/kimi-k2-instruct-0905","system_fingerprint":"fp_05df423bab","choices":[{"index":0,"delta":{"tool_calls":[{"id":"functions.add:0","type":"function","function":{"name":"add","arguments":"{\"a\":2,\"b\":3}"},"index":0}]},"logprobs":null,"finish_reason":null}]}"#

    // corpus: chat/TestOpenAICompatObjectGeneration__zai-glm-4-7-flash__complex_object_streaming.yaml (usage inside the finish chunk)
    static let zaiFinishWithUsage = #"{"id":"202603130505188c5fe47771ce4c7d","created":1773349518,"object":"chat.completion.chunk","model":"glm-4.7-flash","choices":[{"index":0,"finish_reason":"tool_calls","delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":312,"completion_tokens":233,"total_tokens":545,"prompt_tokens_details":{"cached_tokens":43},"completion_tokens_details":{"reasoning_tokens":175}}}"#
    // QUIRKS.md: Z.ai sets finish_reason on the chunk that carries the tool call.
    static let zaiToolCallWithFinish = #"{"id":"202603130505188c5fe47771ce4c7d","created":1773349518,"object":"chat.completion.chunk","model":"glm-4.7-flash","choices":[{"index":0,"finish_reason":"tool_calls","delta":{"role":"assistant","content":"","tool_calls":[{"id":"call_1","index":0,"type":"function","function":{"name":"add","arguments":"{\"a\":2,\"b\":3}"}}]}}]}"#

    /// The chunk's JSON object.
    static func object(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: JSONValue] {
        try #require(try JSONValue(parsing: Array(json.utf8)).objectValue, sourceLocation: sourceLocation)
    }

    static func facts(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> ChunkFacts {
        ChunkFacts(try self.object(json, sourceLocation: sourceLocation))
    }

    /// The upstream event for one SSE block, decoded from its bytes like any other.
    static func event(block: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> StreamEvent {
        let frames = try SSEFeed.frames(SSEFeed.whole(block))
        try #require(frames.count == 1, "expected one frame in \(block.debugDescription)", sourceLocation: sourceLocation)
        return StreamEvent(upstream: frames[0])
    }

    /// The upstream event for `data: JSON`.
    static func event(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> StreamEvent {
        try self.event(block: "data: \(json)\n\n", sourceLocation: sourceLocation)
    }
}
