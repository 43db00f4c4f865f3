import BenchSupport
import NIOCore
import NIOHTTP1
import NIOPosix

/// What came back for one request, as far as the client read it.
struct SoakAnswer: Sendable {
    var status: UInt?
    var keepAlive = true
    var dataEvents = 0
    var contentChunks = 0
    var sawDone = false
    /// The response reached its end (`.end`).
    var ended = false
    /// The client closed the connection on purpose (a ``SoakRequestKind/disconnect``).
    var hungUp = false

    /// Nil when the relay answered as it must for `kind`; otherwise what went wrong.
    func failure(for kind: SoakRequestKind) -> String? {
        guard let status else { return "closed_before_head" }
        guard status == kind.expectedStatus else { return "status_\(status)" }
        switch kind {
        case .disconnect:
            return self.hungUp ? nil : "stream_ended_before_hang_up"
        case .stream:
            if !self.ended { return "closed_mid_stream" }
            if !self.sawDone { return "no_done" }
            if self.contentChunks != SoakMix.streamContentChunks { return "content_chunks_\(self.contentChunks)" }
            return nil
        case .completion, .unknownModel, .invalidJSON, .upstreamError, .upstreamRateLimit:
            return self.ended ? nil : "closed_before_end"
        }
    }

    /// Whether the next request may go on the same connection.
    var connectionReusable: Bool { self.ended && self.keepAlive && !self.hungUp }
}

/// One keep-alive HTTP/1.1 connection to the relay's Unix socket, one request at a time.
///
/// A connection that gets no byte for `idleTimeout` while a request waits is closed (NIO's
/// `IdleStateHandler`), so a relay that swallows a request fails that request instead of
/// hanging the soak.
struct SoakConnection {
    typealias Channel = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    static func open(socketPath: String, group: any EventLoopGroup, idleTimeout: TimeAmount) async throws -> Channel {
        try await ClientBootstrap(group: group)
            .connectTimeout(.seconds(30))
            .connect(unixDomainSocketPath: socketPath) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandlers([IdleStateHandler(readTimeout: idleTimeout), CloseWhenIdle()])
                    return try Channel(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Sends `kind`'s request and reads its answer: to the end, or, for a hang-up, until
    /// enough content has come (the caller then closes the connection).
    static func exchange(
        _ kind: SoakRequestKind,
        outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>,
        responses: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator
    ) async throws -> SoakAnswer {
        let request = SoakMix.request(kind)
        try await outbound.write(contentsOf: [.head(request.head), .body(.byteBuffer(request.body)), .end(nil)])
        var answer = SoakAnswer()
        var lines = SSELineScanner()
        while let part = try await responses.next() {
            switch part {
            case .head(let head):
                answer.status = head.status.code
                answer.keepAlive = head.isKeepAlive
            case .body(let body):
                guard answer.status == 200 else { continue }
                lines.scan(body) { line in
                    guard case .data(let carriesContent, let isDone) = SSELine(line) else { return }
                    answer.dataEvents += 1
                    if carriesContent { answer.contentChunks += 1 }
                    if isDone { answer.sawDone = true }
                }
                if kind == .disconnect, answer.contentChunks >= SoakMix.contentChunksBeforeHangUp {
                    answer.hungUp = true
                    return answer
                }
            case .end:
                answer.ended = true
                return answer
            }
        }
        return answer
    }

    /// `GET path` on a connection of its own; the body, or nil when the status is not 200.
    static func get(_ path: String, socketPath: String, group: any EventLoopGroup) async throws -> ByteBuffer? {
        let channel = try await self.open(socketPath: socketPath, group: group, idleTimeout: .seconds(30))
        return try await channel.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "localhost")
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
            try await outbound.write(contentsOf: [.head(head), .end(nil)])
            var status: UInt?
            var body = ByteBuffer()
            for try await part in inbound {
                switch part {
                case .head(let head): status = head.status.code
                case .body(var part): body.writeBuffer(&part)
                case .end: return status == 200 ? body : nil
                }
            }
            return nil
        }
    }
}

/// Closes the connection when `IdleStateHandler` reports that nothing was read for its timeout.
private final class CloseWhenIdle: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}
