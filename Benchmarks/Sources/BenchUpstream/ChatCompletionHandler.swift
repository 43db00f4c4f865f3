import Foundation
import NIOCore
import NIOHTTP1

/// Answers the OpenAI routes a relay forwards: `POST /v1/chat/completions` (streaming or
/// not) and `GET /v1/models`.
///
/// Requests are parsed by NIOHTTP1's decoder, but responses are written as raw bytes: the
/// events come pre-framed as HTTP chunks (``ChunkPayloads``), so that an event costs one
/// buffer write instead of the encoder's three. Streams respect the socket's writability:
/// a relay that reads slowly slows this upstream down instead of making it buffer, as a
/// real upstream's TCP stack would.
final class ChatCompletionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    /// Larger request bodies are cut; a benchmark request is a few hundred bytes.
    static let maximumRequestBody = 1 << 20

    private var requestHead: HTTPRequestHead?
    private var requestBody = ByteBuffer()
    private var stream: ActiveStream?
    /// Requests that arrived while a stream was still going (pipelining; relays do not do
    /// it, but HTTP/1.1 allows it), answered in order.
    private var waitingRequests: [(head: HTTPRequestHead, body: ByteBuffer)] = []

    private struct ActiveStream {
        var cursor: StreamCursor
        let eventsPerFlush: Int
        let keepAlive: Bool
        var waiting: Scheduled<Void>?
    }

    private static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.requestHead = head
            self.requestBody = ByteBuffer()
        case .body(var part):
            if self.requestBody.readableBytes + part.readableBytes <= Self.maximumRequestBody {
                self.requestBody.writeBuffer(&part)
            }
        case .end:
            guard let head = self.requestHead else { return }
            self.requestHead = nil
            if self.stream != nil {
                self.waitingRequests.append((head, self.requestBody))
            } else {
                self.respond(to: head, body: self.requestBody, context: context)
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let stream = self.stream, stream.waiting == nil {
            self.pump(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stream?.waiting?.cancel()
        self.stream = nil
        self.waitingRequests = []
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(to head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        switch (head.method, path) {
        case (.POST, "/v1/chat/completions"):
            self.answerChatCompletion(head: head, body: body, context: context)
        case (.GET, "/v1/models"):
            let body = #"{"object":"list","data":[{"id":"bench-c50","object":"model","created":1,"owned_by":"bench"},"#
                + #"{"id":"bench-c50-e20","object":"model","created":1,"owned_by":"bench"},"#
                + #"{"id":"bench-c60-d1000","object":"model","created":1,"owned_by":"bench"}]}"#
            self.sendJSON(status: .ok, body: ByteBuffer(string: body), head: head, context: context)
        default:
            self.sendError(status: .notFound, code: "not_found", message: "no route \(head.method) \(path)", head: head, context: context)
        }
    }

    private func answerChatCompletion(head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        let request: ChatRequestFields
        do {
            request = try JSONDecoder().decode(ChatRequestFields.self, from: Data(body.readableBytesView))
        } catch {
            self.sendError(status: .badRequest, code: "invalid_json", message: "the body is not a chat request: \(error)", head: head, context: context)
            return
        }
        guard let script = StreamScript(model: request.model) else {
            self.sendError(
                status: .notFound, code: "model_not_found",
                message: "The model '\(request.model)' does not exist (bench-cN[-eN][-dN][-bN])", head: head, context: context
            )
            return
        }
        if let status = script.errorStatus {
            let code = status == 429 ? "rate_limit_exceeded" : "bench_upstream_error"
            self.sendError(
                status: HTTPResponseStatus(statusCode: status), code: code,
                message: "bench-upstream fails this model with \(status) on purpose", head: head, context: context
            )
            return
        }
        guard request.stream == true else {
            let payloads = ChunkPayloads.forContentChunks(script.contentChunks)
            self.sendJSON(status: .ok, body: payloads.completion, head: head, context: context)
            return
        }
        let connection = head.isKeepAlive ? "" : "Connection: close\r\n"
        let responseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            + "Transfer-Encoding: chunked\r\n\(connection)\r\n"
        context.write(self.wrapOutboundOut(ByteBuffer(string: responseHead)), promise: nil)
        self.stream = ActiveStream(
            cursor: StreamCursor(script: script, includeUsage: request.stream_options?.include_usage == true),
            eventsPerFlush: script.eventsPerFlush,
            keepAlive: head.isKeepAlive
        )
        self.pump(context: context)
    }

    /// Writes events until the stream ends, must wait, or the socket is full.
    private func pump(context: ChannelHandlerContext) {
        guard var stream = self.stream else { return }
        stream.waiting = nil
        var unflushed = 0
        while context.channel.isWritable {
            switch stream.cursor.next() {
            case .event(let event):
                context.write(self.wrapOutboundOut(event), promise: nil)
                unflushed += 1
                if unflushed >= stream.eventsPerFlush {
                    context.flush()
                    unflushed = 0
                }
            case .wait(let delay):
                if unflushed > 0 { context.flush() }
                stream.waiting = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                    self.pump(context: context)
                }
                self.stream = stream
                return
            case .end:
                self.stream = nil
                self.finishResponse(with: Self.lastChunk, keepAlive: stream.keepAlive, context: context)
                return
            }
        }
        if unflushed > 0 { context.flush() }
        self.stream = stream
    }

    private func sendJSON(status: HTTPResponseStatus, body: ByteBuffer, head: HTTPRequestHead, context: ChannelHandlerContext) {
        let connection = head.isKeepAlive ? "" : "Connection: close\r\n"
        let responseHead = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.readableBytes)\r\n\(connection)\r\n"
        context.write(self.wrapOutboundOut(ByteBuffer(string: responseHead)), promise: nil)
        self.finishResponse(with: body, keepAlive: head.isKeepAlive, context: context)
    }

    private func sendError(status: HTTPResponseStatus, code: String, message: String, head: HTTPRequestHead, context: ChannelHandlerContext) {
        let escaped = message.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        let body = #"{"error":{"message":"\#(escaped)","type":"invalid_request_error","code":"\#(code)"}}"#
        self.sendJSON(status: status, body: ByteBuffer(string: body), head: head, context: context)
    }

    /// Writes the response's last bytes; then closes the connection once they are out, or
    /// answers the next request in line.
    private func finishResponse(with lastBytes: ByteBuffer, keepAlive: Bool, context: ChannelHandlerContext) {
        let written = context.writeAndFlush(self.wrapOutboundOut(lastBytes))
        guard keepAlive else {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        if !self.waitingRequests.isEmpty {
            let next = self.waitingRequests.removeFirst()
            self.respond(to: next.head, body: next.body, context: context)
        }
    }
}

/// The parts of a chat request the upstream reads; everything else is ignored.
struct ChatRequestFields: Decodable {
    struct StreamOptions: Decodable {
        var include_usage: Bool?
    }

    var model: String
    var stream: Bool?
    var stream_options: StreamOptions?
}
