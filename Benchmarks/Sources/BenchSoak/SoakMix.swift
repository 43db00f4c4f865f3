import NIOCore
import NIOHTTP1

/// The kinds of request the soak sends, each with the answer the relay must give.
///
/// A long run must exercise every way a request ends, because a leak usually hides in one
/// path only: a stream that ends normally, a whole completion, an error the relay answers
/// itself, an error from the provider, and a client that hangs up mid-stream.
enum SoakRequestKind: String, CaseIterable, Codable, Sendable {
    /// `bench-c50`, streamed: 50 content chunks and `[DONE]`.
    case stream
    /// `bench-c50` without `stream`: one `chat.completion`.
    case completion
    /// A model no route serves: the relay answers 404 itself.
    case unknownModel = "unknown_model"
    /// A body that is not JSON: the relay answers 400 itself.
    case invalidJSON = "invalid_json"
    /// `bench-s500`: the provider fails with 500, which the relay passes on.
    case upstreamError = "upstream_500"
    /// `bench-s429`: the provider rate-limits with 429, which the relay passes on.
    case upstreamRateLimit = "upstream_429"
    /// `bench-c100-d10` (a 1-second stream): the client closes its connection after
    /// ``SoakMix/contentChunksBeforeHangUp`` content chunks, while the relay still streams.
    case disconnect

    /// The status the relay must answer with.
    var expectedStatus: UInt {
        switch self {
        case .stream, .completion, .disconnect: 200
        case .unknownModel: 404
        case .invalidJSON: 400
        case .upstreamError: 500
        case .upstreamRateLimit: 429
        }
    }
}

/// Which kind request number `index` is: a fixed cycle of 20, so that any stretch of the run
/// has the same mix, and the warm-up (the first tenth) sees every kind.
///
/// Per 20 requests: 10 streams, 4 completions, 2 hang-ups, and one each of the four errors.
/// So 50,000 requests relay 25,000 streams of 50 content chunks: 1.25 million content chunks.
enum SoakMix {
    static let cycle: [SoakRequestKind] = [
        .stream, .completion, .stream, .unknownModel, .stream, .disconnect, .stream, .completion,
        .stream, .invalidJSON, .stream, .upstreamError, .stream, .completion, .stream, .disconnect,
        .stream, .upstreamRateLimit, .stream, .completion,
    ]

    static let streamContentChunks = 50
    static let contentChunksBeforeHangUp = 5

    /// The request for `kind`, over the Unix socket (`Host: localhost`).
    static func request(_ kind: SoakRequestKind) -> (head: HTTPRequestHead, body: ByteBuffer) {
        let body: String
        switch kind {
        case .stream: body = self.chatBody(model: "bench-c\(self.streamContentChunks)", stream: true)
        case .completion: body = self.chatBody(model: "bench-c\(self.streamContentChunks)", stream: false)
        case .unknownModel: body = self.chatBody(model: "no-such-model", stream: true)
        case .invalidJSON: body = #"{"model":"bench-c50","messages":[{"role":"user","content":"#
        case .upstreamError: body = self.chatBody(model: "bench-s500", stream: true)
        case .upstreamRateLimit: body = self.chatBody(model: "bench-s429", stream: false)
        case .disconnect: body = self.chatBody(model: "bench-c100-d10", stream: true)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "localhost")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        return (HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions", headers: headers), ByteBuffer(string: body))
    }

    private static func chatBody(model: String, stream: Bool) -> String {
        let streaming = stream ? #","stream":true,"stream_options":{"include_usage":true}"# : ""
        return #"{"model":"\#(model)"\#(streaming),"messages":["#
            + #"{"role":"system","content":"You are a helpful assistant"},"#
            + #"{"role":"user","content":"Say hi in Portuguese"}]}"#
    }
}
