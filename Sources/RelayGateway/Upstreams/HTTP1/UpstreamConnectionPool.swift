import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

/// Keep-alive HTTP/1.1 connections to one upstream origin, over TLS for `https://`, one
/// pool per event loop, so that a request made on a loop reads its upstream on that loop
/// too. See ``UpstreamCall`` for why the relay has a client of its own.
final class UpstreamConnectionPools: Sendable {
    private let pools: [ObjectIdentifier: UpstreamConnectionPool]
    private let all: [UpstreamConnectionPool]
    private let nextIndex = Atomic<Int>(0)
    /// Each pool's connection limit: `max_connections` split over the loops, at least one.
    let connectionsPerPool: Int

    var count: Int { self.all.count }

    /// `tls`: for an `https://` origin, how to check its certificate (the system's trust
    /// roots unless a test says otherwise), else nil.
    init(
        eventLoopGroup: MultiThreadedEventLoopGroup,
        host: String,
        port: Int,
        tls: TLSConfiguration? = nil,
        connectTimeout: TimeAmount,
        maximumConnections: Int,
        idleLifetime: TimeAmount = UpstreamConnectionPool.defaultIdleLifetime
    ) throws {
        let loops = Array(eventLoopGroup.makeIterator())
        let perLoop = max(1, (maximumConnections + loops.count - 1) / loops.count)
        var secure: UpstreamConnectionPool.TLS?
        if var tls {
            // HTTP/1.1 only: one stream a connection, as this client speaks.
            tls.applicationProtocols = ["http/1.1"]
            // No SNI for an address (NIOSSL refuses one); its certificate is still checked against it.
            let isAddress = (try? SocketAddress(ipAddress: host, port: port)) != nil
            secure = .init(context: try NIOSSLContext(configuration: tls), serverHostname: isAddress ? nil : host)
        }
        var pools: [ObjectIdentifier: UpstreamConnectionPool] = [:]
        for loop in loops {
            pools[ObjectIdentifier(loop)] = UpstreamConnectionPool(
                eventLoop: loop, host: host, port: port, tls: secure, connectTimeout: connectTimeout, maximumConnections: perLoop,
                idleLifetime: idleLifetime
            )
        }
        self.pools = pools
        self.all = loops.compactMap { pools[ObjectIdentifier($0)] }
        self.connectionsPerPool = perLoop
    }

    /// The current loop's pool when called on a loop, else the next in turn.
    func next() -> UpstreamConnectionPool {
        if let loop = MultiThreadedEventLoopGroup.currentEventLoop, let own = self.pools[ObjectIdentifier(loop)] {
            return own
        }
        return self.all[self.nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue % self.all.count]
    }

    func shutdown() async {
        for pool in self.all {
            try? await pool.eventLoop.submit { pool.closeAll() }.get()
        }
    }
}

/// The connections of one origin on one event loop: idle ones kept for the next request,
/// at most `maximumConnections` open, further requests queued until one is free.
///
/// Confined to `eventLoop`: every method runs there.
final class UpstreamConnectionPool: @unchecked Sendable {
    struct TLS: @unchecked Sendable {
        /// Made once for the origin (it loads the trust roots); NIOSSL's contexts are
        /// thread-safe once made.
        var context: NIOSSLContext
        var serverHostname: String?
    }

    let eventLoop: any EventLoop
    private let host: String
    private let port: Int
    private let tls: TLS?
    private let connectTimeout: TimeAmount
    private let maximumConnections: Int

    /// How long a connection may stay idle before the pool closes it by default
    /// (AsyncHTTPClient's pool, used before, was set to the same): the upstream is spared
    /// connections nobody uses after a burst, and the daemon their descriptors.
    static let defaultIdleLifetime = TimeAmount.seconds(60)
    private let idleLifetime: TimeAmount

    /// Most recently used last: the warmest connection is taken first, the oldest idle
    /// one is at the front.
    private var idle: [UpstreamConnection] = []
    /// Closes the idle connections whose lifetime ran out: one timer for the pool, armed
    /// for the oldest.
    private var idleSweep: Scheduled<Void>?
    /// Connections open or being opened.
    private var openCount = 0
    private var waiters = CircularBuffer<EventLoopPromise<UpstreamConnection>>()
    private var isShutDown = false

    init(
        eventLoop: any EventLoop,
        host: String,
        port: Int,
        tls: TLS?,
        connectTimeout: TimeAmount,
        maximumConnections: Int,
        idleLifetime: TimeAmount = UpstreamConnectionPool.defaultIdleLifetime
    ) {
        self.eventLoop = eventLoop
        self.idleLifetime = idleLifetime
        self.host = host
        self.port = port
        self.tls = tls
        self.connectTimeout = connectTimeout
        self.maximumConnections = maximumConnections
    }

    /// An idle connection that is still usable, if there is one (the most recently used).
    func takeIdle() -> UpstreamConnection? {
        self.eventLoop.preconditionInEventLoop()
        while let connection = self.idle.popLast() {
            connection.idleSince = nil
            if connection.isUsable { return connection }
        }
        return nil
    }

    /// An idle connection (unless `fresh`), a new one, or the next to be released.
    func acquire(fresh: Bool) -> EventLoopFuture<UpstreamConnection> {
        if !fresh, let connection = self.takeIdle() {
            return self.eventLoop.makeSucceededFuture(connection)
        }
        self.eventLoop.preconditionInEventLoop()
        if self.openCount < self.maximumConnections || fresh {
            return self.connect()
        }
        let waiter = self.eventLoop.makePromise(of: UpstreamConnection.self)
        self.waiters.append(waiter)
        return waiter.futureResult
    }

    /// A connection whose response ended cleanly and that the upstream keeps open.
    func release(_ connection: UpstreamConnection) {
        self.eventLoop.preconditionInEventLoop()
        guard connection.isUsable, !self.isShutDown else {
            connection.close()
            return
        }
        if let waiter = self.waiters.popFirst() {
            waiter.succeed(connection)
        } else {
            connection.idleSince = .now()
            self.idle.append(connection)
            if self.idleSweep == nil { self.armIdleSweep() }
        }
    }

    private func armIdleSweep() {
        guard let oldest = self.idle.first?.idleSince else { return }
        self.idleSweep = self.eventLoop.assumeIsolated().scheduleTask(deadline: oldest + self.idleLifetime) {
            self.idleSweep = nil
            let now = NIODeadline.now()
            var expired = 0
            while expired < self.idle.count, let since = self.idle[expired].idleSince, now - since >= self.idleLifetime {
                expired += 1
            }
            let closing = self.idle.prefix(expired)
            self.idle.removeFirst(expired)
            for connection in closing {
                connection.idleSince = nil
                connection.close()
            }
            self.armIdleSweep()
        }
    }

    /// A connection closed (or never opened): its place goes to the next waiter.
    func connectionGone(_ connection: UpstreamConnection) {
        self.eventLoop.preconditionInEventLoop()
        self.openCount -= 1
        if connection.idleSince != nil, let index = self.idle.firstIndex(where: { $0 === connection }) {
            connection.idleSince = nil
            self.idle.remove(at: index)
        }
        if let waiter = self.waiters.popFirst() {
            if self.isShutDown {
                waiter.fail(ChannelError.ioOnClosedChannel)
            } else {
                self.connect().cascade(to: waiter)
            }
        }
    }

    private func connect() -> EventLoopFuture<UpstreamConnection> {
        self.openCount += 1
        let connection = UpstreamConnection(pool: self)
        let tls = self.tls
        return ClientBootstrap(group: self.eventLoop)
            .connectTimeout(self.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Responses come in as events of a few hundred bytes: start small, as the
            // client side does (GatewayListener), and grow when the reads are full.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverHostname)
                        )
                    }
                    // HTTP/1.1 is the connection's own: it writes requests as bytes
                    // (``HTTP1RequestHead``) and reads responses (``HTTP1ResponseParser``).
                    try channel.pipeline.syncOperations.addHandler(connection)
                }
            }
            .connect(host: self.host, port: self.port)
            .map { _ in connection }
            .flatMapErrorThrowing { error in
                connection.connectFailed()
                throw error
            }
    }

    func closeAll() {
        self.isShutDown = true
        self.idleSweep?.cancel()
        self.idleSweep = nil
        let idle = self.idle
        self.idle.removeAll()
        for connection in idle { connection.close() }
        while let waiter = self.waiters.popFirst() { waiter.fail(ChannelError.ioOnClosedChannel) }
    }
}

/// One keep-alive connection to an upstream, and the handler at the end of its pipeline
/// that reads its responses (``HTTP1ResponseParser``) and hands each part to the request
/// it belongs to.
///
/// It also holds back reads while the request's body is full (the relay's client is
/// slower than the upstream): NIO asks for a read after every read, and this handler
/// passes the request on only when there is room, so a slow client slows the upstream.
///
/// Confined to its pool's event loop.
final class UpstreamConnection: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private unowned let pool: UpstreamConnectionPool
    private var context: ChannelHandlerContext?
    /// The request being answered on this connection.
    private var call: UpstreamCall?
    private var parser = HTTP1ResponseParser()
    /// In the parser's hands: the connection's end waits until it is done (a part it hands
    /// on may close the connection).
    private var isReading = false
    private var endedWhileReading = false
    /// A read NIO asked for while the call's body was full.
    private var readPending = false
    private var gone = false
    /// Whether it served a request before the current one (a closed idle connection then
    /// looks like a failed request, which may be sent again on a fresh one).
    private(set) var wasReused = false
    /// Since when it waits in its pool for a request; nil while in use.
    var idleSince: NIODeadline?

    init(pool: UpstreamConnectionPool) {
        self.pool = pool
    }

    var isUsable: Bool { !self.gone && (self.context?.channel.isActive ?? false) }

    // MARK: Used by the call

    /// Sends a request (its head as bytes) on this connection; `call` gets its response.
    func send(_ head: ByteBuffer, body: ByteBuffer, for call: UpstreamCall) {
        guard let context = self.context, !self.gone else {
            call.connectionFailed(ChannelError.ioOnClosedChannel, on: self)
            return
        }
        self.call = call
        context.write(self.wrapOutboundOut(head), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(body), promise: nil)
    }

    /// The call has room again: a read held back goes ahead.
    func resumeReading() {
        guard self.readPending, let context = self.context else { return }
        self.readPending = false
        context.read()
    }

    /// The response ended and the connection may serve another request.
    func responseEnded(reusable: Bool) {
        self.call = nil
        self.wasReused = true
        if reusable {
            self.pool.release(self)
        } else {
            self.close()
        }
    }

    /// Closes the connection; its call, if any, has been told already or is told now.
    func close() {
        self.call = nil
        self.context?.close(promise: nil)
    }

    func connectFailed() {
        self.markGone()
    }

    // MARK: ChannelHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.lost(ChannelError.ioOnClosedChannel)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        guard self.call != nil else {
            // Bytes nobody asked for (after a response ended): the connection cannot be trusted.
            context.close(promise: nil)
            return
        }
        self.isReading = true
        defer { self.isReading = false }
        do {
            try self.parser.feed(bytes) { part in self.deliver(part) }
        } catch {
            self.lost(error)
            context.close(promise: nil)
            return
        }
        if self.endedWhileReading {
            self.endedWhileReading = false
            self.isReading = false
            self.inputEnded()
        }
    }

    /// Hands a part of the response to its call.
    private func deliver(_ part: HTTP1ResponseParser.Part) {
        guard let call = self.call else { return }
        switch part {
        case .head(let head): call.receivedHead(head, on: self)
        case .body(let buffer): call.receivedBody(buffer, on: self)
        case .end(let reusable): call.receivedEnd(on: self, reusable: reusable)
        }
    }

    /// The upstream closed the connection: the end of a body that runs to the close, a
    /// response cut off, or an idle connection gone.
    private func inputEnded() {
        do {
            try self.parser.endOfInput { part in self.deliver(part) }
            self.lost(ChannelError.eof)
        } catch {
            self.lost(error)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.call?.readComplete(on: self)
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if let call = self.call, call.isPaused {
            self.readPending = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if self.isReading {
            self.endedWhileReading = true
        } else {
            self.inputEnded()
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.lost(error)
        context.close(promise: nil)
    }

    /// The connection is unusable: its call fails, its pool forgets it.
    private func lost(_ error: any Error) {
        let call = self.call.take()
        call?.connectionFailed(error, on: self)
        self.markGone()
    }

    /// Tells the pool once that this connection is gone.
    private func markGone() {
        guard !self.gone else { return }
        self.gone = true
        self.pool.connectionGone(self)
    }
}
