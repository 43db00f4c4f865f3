import NIOConcurrencyHelpers
import NIOCore

/// The SSE events of a stream of N content chunks, encoded once (each already framed as one
/// HTTP/1.1 chunk) and shared by every request that asks for N, so that serving an event
/// costs the upstream one buffer write and nothing else.
///
/// Shaped like OpenAI's own chunks: a role chunk, content chunks, a finish chunk, a usage
/// chunk (`choices: []`) when the request asked for it, then `[DONE]`.
struct ChunkPayloads: Sendable {
    let role: ByteBuffer
    let empty: ByteBuffer
    let contents: [ByteBuffer]
    let finish: ByteBuffer
    let usage: ByteBuffer
    let done: ByteBuffer
    /// The whole answer of a non-streaming request for the same chunks.
    let completion: ByteBuffer

    /// The name every chunk reports, whatever the request's model was.
    static let reportedModel = "bench-v1"
    static let promptTokens = 12

    private static let cache = NIOLockedValueBox<[Int: ChunkPayloads]>([:])

    /// The payloads for `contentChunks` chunks, built on first use.
    static func forContentChunks(_ contentChunks: Int) -> ChunkPayloads {
        cache.withLockedValue { cache in
            if let payloads = cache[contentChunks] { return payloads }
            let payloads = ChunkPayloads(contentChunks: contentChunks)
            cache[contentChunks] = payloads
            return payloads
        }
    }

    private init(contentChunks: Int) {
        let head = #"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"\#(Self.reportedModel)","#
        func event(_ json: String) -> ByteBuffer { Self.framedAsChunk("data: \(json)\n\n") }
        func choice(delta: String, finishReason: String) -> String {
            head + #""choices":[{"index":0,"delta":\#(delta),"finish_reason":\#(finishReason)}]}"#
        }
        self.role = event(choice(delta: #"{"role":"assistant","content":""}"#, finishReason: "null"))
        self.empty = event(choice(delta: "{}", finishReason: "null"))
        self.contents = (0..<contentChunks).map { index in
            event(choice(delta: #"{"content":"\#(Self.token(index))"}"#, finishReason: "null"))
        }
        self.finish = event(choice(delta: "{}", finishReason: #""stop""#))
        let usage = Self.usageJSON(completionTokens: contentChunks)
        self.usage = event(head + #""choices":[],"usage":\#(usage)}"#)
        self.done = Self.framedAsChunk("data: [DONE]\n\n")
        let text = (0..<contentChunks).map(Self.token).joined()
        self.completion = ByteBuffer(
            string: #"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"\#(Self.reportedModel)","#
                + #""choices":[{"index":0,"message":{"role":"assistant","content":"\#(text)"},"finish_reason":"stop"}],"#
                + #""usage":\#(usage)}"#
        )
    }

    /// `text` as one chunk of a `Transfer-Encoding: chunked` body: size in hex, CRLF, the
    /// bytes, CRLF.
    private static func framedAsChunk(_ text: String) -> ByteBuffer {
        ByteBuffer(string: String(text.utf8.count, radix: 16) + "\r\n" + text + "\r\n")
    }

    private static func token(_ index: Int) -> String { "tok\(index) " }

    private static func usageJSON(completionTokens: Int) -> String {
        #"{"prompt_tokens":\#(promptTokens),"completion_tokens":\#(completionTokens),"total_tokens":\#(promptTokens + completionTokens)}"#
    }
}
