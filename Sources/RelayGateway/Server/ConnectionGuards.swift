import HTTPTypes
import Logging
import NIOCore
import NIOHTTPTypes
import Synchronization

/// How many client connections are open, against `server.max_connections`.
///
/// A connection over the limit is answered `503` with an OpenAI-style error and closed at
/// once, instead of waiting in the accept queue behind idle ones.
final class ConnectionLimit: Sendable {
    let maximum: Int
    private let open = Atomic<Int>(0)

    init(maximum: Int) {
        self.maximum = maximum
    }

    var count: Int { self.open.load(ordering: .relaxed) }

    /// Counts `channel` in if there is room, and out again when it closes.
    func admit(_ channel: any Channel) -> Bool {
        guard self.open.add(1, ordering: .relaxed).newValue <= self.maximum else {
            self.open.subtract(1, ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.open.subtract(1, ordering: .relaxed) }
        return true
    }

    /// The whole answer to a connection over the limit.
    static let refusal: ByteBuffer = {
        let body = #"{"error":{"message":"The gateway has too many open connections; try again shortly.","type":"server_error","code":"too_many_connections"}}"#
        return ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
    }()
}

/// Watches the client's side of a connection, for two things:
///
/// - the time a client takes to send a request, head and body, from its first byte
///   (`server.request_timeout`): a head that never ends or a body sent a byte at a time gets
///   `408` and the connection is closed, so that such clients cannot hold the gateway's
///   connections (the time between requests on a kept-alive connection is the idle
///   timeout's);
/// - the client closing its end (``watchClose(_:)``), which cancels a request in flight.
///
/// Sits after the HTTP decoder, where it sees each request end, and puts a partner at the
/// front of the pipeline, where it sees each request's first raw byte.
final class ClientWatchHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let timeout: TimeAmount
    private let logger: Logger
    /// The request timeout's timer, armed by the first request and re-armed lazily: when it
    /// fires it looks at when the request being read began, and goes quiet between
    /// requests. A timer scheduled and cancelled for every request cost about 9,000
    /// instructions a request in NIO's timer heap (its cancel searches the heap).
    private var deadline: Scheduled<Void>?
    /// When the request being read began: its first byte. Nil between requests.
    private var requestBegan: NIODeadline?
    /// Whether the client has closed its side of the connection (or the connection went).
    private var clientHasClosed = false
    /// What to call when it does: the request in flight's cancellation.
    private var onClientClosed: (@Sendable () -> Void)?

    /// Calls `callback` once when the client closes its end (with remote half-closure on,
    /// NIO reports it as an event) or the connection goes; at once if that has happened.
    /// One callback at a time, set per request and removed with ``unwatchClose()`` when it
    /// ends, so that a kept-alive connection does not collect them. Call on the event loop.
    func watchClose(_ callback: @escaping @Sendable () -> Void) {
        guard !self.clientHasClosed else { return callback() }
        self.onClientClosed = callback
    }

    /// Forgets the callback ``watchClose(_:)`` set. Call on the event loop.
    func unwatchClose() {
        self.onClientClosed = nil
    }

    private func noteClientClosed() {
        self.clientHasClosed = true
        let callback = self.onClientClosed
        self.onClientClosed = nil
        callback?()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent { self.noteClientClosed() }
        context.fireUserInboundEventTriggered(event)
    }

    init(timeout: TimeAmount, logger: Logger) {
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let watcher = FirstByteWatcher { [weak self] context in self?.requestStarted(context: context) }
        try? context.pipeline.syncOperations.addHandler(watcher, position: .first)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.noteClientClosed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = Self.unwrapInboundIn(data) {
            // The timer stays: it goes quiet when it finds no request being read.
            self.requestBegan = nil
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.deadline?.cancel()
        self.noteClientClosed()
        context.fireChannelInactive()
    }

    /// The first byte of a request arrived (`context` is the watcher's, at the socket end).
    private func requestStarted(context: ChannelHandlerContext) {
        guard self.requestBegan == nil else { return }
        let began = NIODeadline.now()
        self.requestBegan = began
        if self.deadline == nil { self.armDeadline(at: began + self.timeout, context: context) }
    }

    /// Arms the timer for `due`; when it fires, a request still being read is refused if its
    /// time is up, or the timer is armed again for the end of its time.
    private func armDeadline(at due: NIODeadline, context: ChannelHandlerContext) {
        let timeout = self.timeout
        let logger = self.logger
        // Runs on the connection's loop, where the handler and its context live.
        self.deadline = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [weak self] in
            guard let self else { return }
            self.deadline = nil
            guard let began = self.requestBegan else { return }
            if NIODeadline.now() < began + timeout {
                // A request that began after the one this timer was armed for.
                self.armDeadline(at: began + timeout, context: context)
                return
            }
            logger.notice(
                "closed a connection whose request took longer than request_timeout to arrive",
                metadata: ["request_timeout_ms": "\(timeout.nanoseconds / 1_000_000)"]
            )
            // Nothing of a response has been written: the request is not complete.
            context.writeAndFlush(NIOAny(Self.refusal)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    static let refusal: ByteBuffer = {
        let body = #"{"error":{"message":"The request was not received in time.","type":"invalid_request_error","code":"request_timeout"}}"#
        return ByteBuffer(string: "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)")
    }()
}

/// Tells ``ClientWatchHandler`` when raw bytes arrive; passes everything on untouched.
private final class FirstByteWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let onBytes: (ChannelHandlerContext) -> Void

    init(onBytes: @escaping (ChannelHandlerContext) -> Void) {
        self.onBytes = onBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.onBytes(context)
        context.fireChannelRead(data)
    }
}
