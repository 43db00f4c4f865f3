import BenchSupport
import NIOCore
import NIOHTTP1

/// One request for the handler to send; `outcome` is fulfilled when its response has ended
/// or failed.
struct ExchangeRequest: Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer
    let outcome: EventLoopPromise<ExchangeOutcome>
}

/// How one request went.
struct ExchangeOutcome: Sendable {
    /// Nil when the stream was whole: status 200, `[DONE]`, and the expected content.
    var failure: String?
    /// Whether the connection may carry the next request.
    var keepAlive: Bool
    /// Whether the response said the connection stays open (HTTP/1.1 without `Connection: close`).
    var announcedKeepAlive = false
    /// The connection closed before any of the response arrived: on a kept-alive
    /// connection, the server had closed it while the request was on its way.
    var closedBeforeResponse = false

    static let closedBeforeHead = "closed_before_head"
}

/// Sends one request at a time on its connection and times the streamed answer as it arrives.
///
/// Everything is recorded on the event loop, into that loop's ``LoopStatistics``: one clock
/// read per socket read, not per event, so that the load generator stays cheap next to the
/// relay it measures.
///
/// A response that has ended is reported at the end of the read burst, not at once, so that
/// a server that closes the connection right after its last byte (without saying
/// `Connection: close`) is seen to have done so before the connection is used again, as
/// curl and httpx check a pooled connection before reuse. A request that gets no byte for
/// `idleTimeout` fails, so that a relay that swallows a request cannot hang the run.
final class StreamingExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = ExchangeRequest
    typealias OutboundOut = HTTPClientRequestPart

    private let statistics: LoopStatistics
    private let expectedContentChunks: Int?
    private let idleTimeout: TimeAmount
    private var inFlight: InFlight?
    private var idleCheck: Scheduled<Void>?

    private struct InFlight {
        let outcome: EventLoopPromise<ExchangeOutcome>
        let sentAt: UInt64
        var status: UInt = 0
        var keepAlive = true
        var sawHead = false
        var sawFirstContent = false
        var lastEventAt: UInt64?
        var contentChunks = 0
        var sawDone = false
        var ended = false
        var lastActivityAt: UInt64
        var lines = SSELineScanner()
    }

    init(statistics: LoopStatistics, expectedContentChunks: Int?, idleTimeout: TimeAmount) {
        self.statistics = statistics
        self.expectedContentChunks = expectedContentChunks
        self.idleTimeout = idleTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = self.unwrapOutboundIn(data)
        guard self.inFlight == nil else {
            request.outcome.succeed(ExchangeOutcome(failure: "client_bug_overlapping_requests", keepAlive: false))
            return
        }
        let now = Self.now()
        self.inFlight = InFlight(outcome: request.outcome, sentAt: now, lastActivityAt: now)
        self.scheduleIdleCheck(in: self.idleTimeout, context: context)
        context.write(self.wrapOutboundOut(.head(request.head)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(request.body))), promise: nil)
        context.write(self.wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard var exchange = self.inFlight, !exchange.ended else { return }
        let now = Self.now()
        exchange.lastActivityAt = now
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            exchange.status = head.status.code
            exchange.keepAlive = head.isKeepAlive
            exchange.sawHead = true
            if head.status == .ok {
                self.statistics.timeToFirstByte.record(microseconds: (now - exchange.sentAt) / 1000)
            }
        case .body(let body):
            self.statistics.responseBytes += body.readableBytes
            guard exchange.status == 200 else { break }
            let statistics = self.statistics
            // The scanner moves out while the closure updates the rest of the exchange.
            var lines = exchange.lines
            exchange.lines = SSELineScanner()
            defer { exchange.lines = lines }
            lines.scan(body) { line in
                switch SSELine(line) {
                case .data(let carriesContent, let isDone):
                    statistics.dataEvents += 1
                    if let last = exchange.lastEventAt { statistics.gapBetweenEvents.record(microseconds: (now - last) / 1000) }
                    exchange.lastEventAt = now
                    if isDone { exchange.sawDone = true }
                    if carriesContent {
                        statistics.contentChunks += 1
                        exchange.contentChunks += 1
                        if !exchange.sawFirstContent {
                            exchange.sawFirstContent = true
                            statistics.timeToFirstContent.record(microseconds: (now - exchange.sentAt) / 1000)
                        }
                    }
                case .comment:
                    statistics.heartbeats += 1
                case .other:
                    break
                }
            }
        case .end:
            exchange.ended = true
        }
        self.inFlight = exchange
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let exchange = self.inFlight, exchange.ended {
            self.inFlight = nil
            self.finish(exchange, connectionOpen: context.channel.isActive)
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.idleCheck?.cancel()
        if let exchange = self.inFlight {
            self.inFlight = nil
            if exchange.ended {
                self.finish(exchange, connectionOpen: false)
            } else if exchange.sawHead {
                exchange.outcome.succeed(ExchangeOutcome(failure: "closed_mid_stream", keepAlive: false))
            } else {
                exchange.outcome.succeed(ExchangeOutcome(failure: ExchangeOutcome.closedBeforeHead, keepAlive: false, closedBeforeResponse: true))
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let exchange = self.inFlight {
            self.inFlight = nil
            exchange.outcome.succeed(ExchangeOutcome(failure: "error: \(error)", keepAlive: false))
        }
        context.close(promise: nil)
    }

    private func scheduleIdleCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        self.idleCheck?.cancel()
        self.idleCheck = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.checkIdle(context: context)
        }
    }

    /// Fails the request when nothing arrived for the idle timeout; otherwise looks again
    /// when the timeout would next run out.
    private func checkIdle(context: ChannelHandlerContext) {
        self.idleCheck = nil
        guard let exchange = self.inFlight, !exchange.ended else { return }
        let quiet = Int64(Self.now() - exchange.lastActivityAt)
        guard quiet >= self.idleTimeout.nanoseconds else {
            self.scheduleIdleCheck(in: .nanoseconds(self.idleTimeout.nanoseconds - quiet), context: context)
            return
        }
        self.inFlight = nil
        let seconds = self.idleTimeout.nanoseconds / 1_000_000_000
        exchange.outcome.succeed(ExchangeOutcome(failure: "no_data_for_\(seconds)s" + (exchange.sawHead ? "" : "_before_head"), keepAlive: false))
        context.close(promise: nil)
    }

    private func finish(_ exchange: InFlight, connectionOpen: Bool) {
        self.idleCheck?.cancel()
        self.idleCheck = nil
        var failure: String?
        if exchange.status != 200 {
            failure = "http_\(exchange.status)"
        } else {
            self.statistics.fewestContentChunks = min(self.statistics.fewestContentChunks, exchange.contentChunks)
            self.statistics.mostContentChunks = max(self.statistics.mostContentChunks, exchange.contentChunks)
            if !exchange.sawDone {
                failure = "no_done"
            } else if let expected = self.expectedContentChunks, expected != exchange.contentChunks {
                failure = "content_chunks_not_\(expected)"
            }
        }
        exchange.outcome.succeed(
            ExchangeOutcome(failure: failure, keepAlive: exchange.keepAlive && connectionOpen, announcedKeepAlive: exchange.keepAlive)
        )
    }

    /// Monotonic nanoseconds.
    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }
}
