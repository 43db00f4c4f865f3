import NIOCore
import NIOHTTP1
import NIOSSL
import RelayCore

/// One request to an upstream on a connection of ours (``UpstreamConnectionPool``): the
/// response head, then the body as an `AsyncSequence` of byte buffers (``UpstreamBody``)
/// that its reader may also wait on with a deadline, with the head and idle timeouts kept
/// by one timer that is re-armed lazily.
///
/// Why not AsyncHTTPClient (which the relay used before, and still uses for HTTP
/// moderation hooks): its read timeout cancels and schedules a timer for every body part
/// it reads, and a streamed chat response is a body part per event; callgrind put that at
/// 11% of the default pipeline's instructions per relayed chunk (Benchmarks/README.md,
/// "What changed since: the upstream client"). Here a body part costs a clock read: the
/// idle timer is armed once and, when it fires, looks at when the last part came; only a
/// stream quiet for the whole timeout fails. Its delegate API, which would have let the
/// timeouts be ours, cost more than it saved (its request type is generic and runs
/// unspecialised from its module).
///
/// Time the relay does not read (its client is slow, the body is full) does not count as
/// the upstream's silence: the idle window starts again when reading resumes.
///
/// Confined to `eventLoop`, as its connection is: the consumer of the body and a cancelled
/// caller hop there.
final class UpstreamCall: @unchecked Sendable {
    private enum Phase {
        case created
        /// Waiting for a connection or for the response head.
        case waitingForHead
        case streaming
        case finished
    }

    let eventLoop: any EventLoop
    private let pool: UpstreamConnectionPool
    private let upstream: String
    private let requestHead: HTTPRequestHead
    private let requestBody: ByteBuffer
    private let timeouts: Timeouts

    private var phase = Phase.created
    private var connection: UpstreamConnection?
    /// Sent again once already, on a fresh connection, after a reused one closed without a
    /// byte of answer (see ``connectionFailed(_:on:)``).
    private var retriedOnFreshConnection = false
    private var sawResponseBytes = false
    private var responseKeepsAlive = false
    private var timer: Scheduled<Void>?
    /// When the last body part came, or reading last resumed after the body was full.
    private var lastActivity = NIODeadline.now()
    private let head: EventLoopPromise<HTTPResponseHead>

    /// Body parts read and not yet taken by the body's reader. The upstream is read only as
    /// fast as the relay takes what was read: while parts wait here, the connection holds
    /// back its reads (a bound of one read, as AsyncHTTPClient's body has).
    private var bodyParts = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    /// How the body ended, once it has (parts may still wait).
    private var bodyEnd: Result<Void, any Error>?
    /// The body's reader, waiting for a part, and until when.
    private var reader: UnsafeContinuation<NextBeforeDeadline<ByteBuffer>, any Error>?
    private var readerDeadline: ContinuousClock.Instant?
    /// One timer for the reader's deadlines, re-armed only when it fires early: a reader's
    /// deadline (the next heartbeat) moves later with every event, and a timer per wait was
    /// what made AsyncHTTPClient's read timeout expensive.
    private var readerTimer: Scheduled<Void>?
    private var readerTimerDeadline: ContinuousClock.Instant?
    /// The body is full: the connection holds back its reads.
    private(set) var isPaused = false

    /// An upstream's head and idle timeouts, and what the client is told when one runs out;
    /// made once per upstream.
    struct Timeouts: Sendable {
        /// How long the head may take from the request's start (waiting for a connection
        /// included): the head timeout, or the idle timeout when that is shorter, as it bounds
        /// the wait for the head too (as a read timeout would).
        let headWait: TimeAmount
        let headError: RelayError
        let idle: TimeAmount
        let idleError: RelayError

        init(head: Duration, headError: RelayError, idle: Duration, idleError: RelayError) {
            self.idle = max(TimeAmount(idle), .nanoseconds(1))
            self.idleError = idleError
            if head <= idle {
                self.headWait = TimeAmount(head)
                self.headError = headError
            } else {
                self.headWait = self.idle
                self.headError = idleError
            }
        }
    }

    /// A call and the body it will fill, once ``start()`` has the head.
    static func make(
        pool: UpstreamConnectionPool,
        upstream: String,
        head: HTTPRequestHead,
        body: ByteBuffer,
        timeouts: Timeouts
    ) -> (call: UpstreamCall, body: UpstreamBody) {
        let call = UpstreamCall(pool: pool, upstream: upstream, head: head, body: body, timeouts: timeouts)
        return (call, UpstreamBody(reader: UpstreamBody.Reader(call)))
    }

    private init(pool: UpstreamConnectionPool, upstream: String, head: HTTPRequestHead, body: ByteBuffer, timeouts: Timeouts) {
        self.eventLoop = pool.eventLoop
        self.pool = pool
        self.upstream = upstream
        self.requestHead = head
        self.requestBody = body
        self.timeouts = timeouts
        self.head = pool.eventLoop.makePromise(of: HTTPResponseHead.self)
    }

    /// Sends the request and waits for the response head. Cancelling the calling task
    /// cancels the request (and closes its connection).
    func start() async throws -> HTTPResponseHead {
        self.onLoop { $0.begin() }
        return try await withTaskCancellationHandler {
            try await self.head.futureResult.get()
        } onCancel: {
            self.onLoop { $0.finish(.failure(CancellationError())) }
        }
    }

    /// Runs `body` on the loop: at once when called there.
    private func onLoop(_ body: @escaping @Sendable (UpstreamCall) -> Void) {
        if self.eventLoop.inEventLoop {
            body(self)
        } else {
            self.eventLoop.execute { body(self) }
        }
    }

    private func begin() {
        guard self.phase == .created else { return }
        self.phase = .waitingForHead
        self.timer = self.eventLoop.assumeIsolated().scheduleTask(in: self.timeouts.headWait) {
            self.timer = nil
            guard self.phase == .waitingForHead else { return }
            self.finish(.failure(self.timeouts.headError))
        }
        self.sendOnConnection(fresh: false)
    }

    private func sendOnConnection(fresh: Bool) {
        self.pool.acquire(fresh: fresh).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let connection):
                guard self.phase == .waitingForHead else {
                    // Timed out or cancelled while waiting for it.
                    self.pool.release(connection)
                    return
                }
                self.connection = connection
                connection.send(self.requestHead, body: self.requestBody, for: self)
            case .failure(let error):
                self.finish(.failure(error))
            }
        }
    }

    // MARK: From the connection

    func receivedHead(_ head: HTTPResponseHead, on connection: UpstreamConnection) {
        self.sawResponseBytes = true
        // 1xx heads (100 Continue) are not the response.
        guard head.status.code >= 200 || head.status == .switchingProtocols else { return }
        guard self.phase == .waitingForHead else { return }
        self.phase = .streaming
        self.responseKeepsAlive = head.isKeepAlive
        self.timer?.cancel()
        self.lastActivity = .now()
        self.armIdleTimer()
        self.head.succeed(head)
    }

    /// Gathers the parts of one read: the reader hears of them when the read is over.
    func receivedBody(_ buffer: ByteBuffer, on connection: UpstreamConnection) {
        guard self.bodyEnd == nil else { return }
        self.bodyParts.append(buffer)
    }

    /// The connection's read is over: a waiting reader takes its first part, and the
    /// body's bound applies to the read as a whole, as AsyncHTTPClient's does (a read of a
    /// burst of events is many chunked-encoding parts; bounded one by one, the second
    /// found the body full and paused the connection: a system call to stop reading and
    /// one to start again, for every read).
    func readComplete(on connection: UpstreamConnection) {
        guard !self.bodyParts.isEmpty else { return }
        self.lastActivity = .now()
        if let reader = self.reader.take() {
            self.readerDeadline = nil
            reader.resume(returning: .element(self.bodyParts.removeFirst()))
        }
        if !self.bodyParts.isEmpty { self.isPaused = true }
    }

    func receivedEnd(on connection: UpstreamConnection) {
        self.readComplete(on: connection)
        let reusable = self.phase == .streaming && self.responseKeepsAlive
        self.connection = nil
        connection.responseEnded(reusable: reusable)
        self.finish(.success(()))
    }

    /// The connection closed or failed before the response ended.
    func connectionFailed(_ error: any Error, on connection: UpstreamConnection) {
        guard self.connection === connection else { return }
        self.connection = nil
        if self.phase == .waitingForHead, !self.sawResponseBytes, connection.wasReused, !self.retriedOnFreshConnection {
            // An idle keep-alive connection the upstream had closed (its keep-alive timeout
            // and this request crossed): it answered nothing, so the request goes again.
            self.retriedOnFreshConnection = true
            self.sendOnConnection(fresh: true)
            return
        }
        // A TLS peer that closes without close_notify has closed all the same.
        let closed = error as? ChannelError == .eof || error as? ChannelError == .ioOnClosedChannel || error as? NIOSSLError == .uncleanShutdown
        self.finish(.failure(
            closed
                ? RelayError.upstreamFailed("Upstream '\(self.upstream)' closed the connection before the response was complete.")
                : error
        ))
    }

    // MARK: The idle timer

    /// Arms the idle timer for the end of the window that began at ``lastActivity``.
    private func armIdleTimer() {
        self.timer = self.eventLoop.assumeIsolated().scheduleTask(deadline: self.lastActivity + self.timeouts.idle) {
            self.timer = nil
            guard self.phase == .streaming else { return }
            if self.isPaused {
                // Not reading: the upstream's silence does not count.
                self.lastActivity = .now()
            }
            if NIODeadline.now() - self.lastActivity < self.timeouts.idle {
                self.armIdleTimer()
                return
            }
            self.finish(.failure(self.timeouts.idleError))
        }
    }

    /// Ends the call once. A connection still answering is closed: the rest of its response
    /// would be read by no one.
    private func finish(_ result: Result<Void, any Error>) {
        guard self.phase != .finished else { return }
        let hadHead = self.phase == .streaming
        self.phase = .finished
        self.timer?.cancel()
        self.timer = nil
        self.readerTimer?.cancel()
        self.readerTimer = nil
        self.readerTimerDeadline = nil
        self.connection.take()?.close()
        switch result {
        case .success:
            if !hadHead { self.head.fail(RelayError.upstreamFailed("Upstream '\(self.upstream)' ended its response without a head.")) }
        case .failure(let error):
            if !hadHead { self.head.fail(error) }
            // A reader that gave up wants none of what was read; parts before a failure of
            // the upstream are read first.
            if error is CancellationError { self.bodyParts.removeAll() }
        }
        self.bodyEnd = result
        if let reader = self.reader.take() {
            self.readerDeadline = nil
            reader.resume(with: Result { try self.takeReadyPart()! })
        }
    }

    // MARK: The body, for its one reader

    /// The next body part, `.end`, or `.deadlinePassed` when `deadline` comes first.
    /// Cancelling the calling task ends the call (and closes its connection).
    func nextBodyPart(before deadline: ContinuousClock.Instant?) async throws -> NextBeforeDeadline<ByteBuffer> {
        // A reader on the loop (the gateway runs streams there) takes what is ready at once.
        if self.eventLoop.inEventLoop, let ready = try self.takeReadyPart() { return ready }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { reader in
                self.onLoop { $0.wait(reader, until: deadline) }
            }
        } onCancel: {
            self.onLoop { $0.finish(.failure(CancellationError())) }
        }
    }

    /// A part that waits, or the body's end; nil while the reader must wait.
    private func takeReadyPart() throws -> NextBeforeDeadline<ByteBuffer>? {
        if let part = self.bodyParts.popFirst() {
            if self.bodyParts.isEmpty, self.isPaused {
                // All taken: reading goes on.
                self.isPaused = false
                self.lastActivity = .now()
                self.connection?.resumeReading()
            }
            return .element(part)
        }
        switch self.bodyEnd {
        case nil: return nil
        case .success: return .end
        case .failure(let error): throw error
        }
    }

    private func wait(_ reader: UnsafeContinuation<NextBeforeDeadline<ByteBuffer>, any Error>, until deadline: ContinuousClock.Instant?) {
        do {
            if let ready = try self.takeReadyPart() {
                reader.resume(returning: ready)
                return
            }
        } catch {
            reader.resume(throwing: error)
            return
        }
        precondition(self.reader == nil, "an upstream body has one reader")
        self.reader = reader
        self.readerDeadline = deadline
        if let deadline { self.armReaderTimer(for: deadline) }
    }

    /// Makes sure the reader's timer fires by `deadline`; a timer armed earlier stays (it
    /// re-arms when it fires).
    private func armReaderTimer(for deadline: ContinuousClock.Instant) {
        if let armed = self.readerTimerDeadline {
            guard deadline < armed else { return }
            self.readerTimer?.cancel()
        }
        self.readerTimerDeadline = deadline
        self.readerTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(ContinuousClock.now.duration(to: deadline))) {
            self.readerTimer = nil
            self.readerTimerDeadline = nil
            guard self.reader != nil, let deadline = self.readerDeadline else { return }
            if ContinuousClock.now < deadline {
                self.armReaderTimer(for: deadline)
                return
            }
            self.readerDeadline = nil
            self.reader.take()?.resume(returning: .deadlinePassed)
        }
    }
}

/// The body of an ``UpstreamCall``, for one reader, who may wait with a deadline.
///
/// Its own rather than NIO's `NIOThrowingAsyncSequenceProducer` (which it was): a wait
/// for a part can end at a deadline without cancelling the read, so the keepalive stage
/// waits for events in the client's task and needs no task of its own to read upstream.
struct UpstreamBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reader: Reader

    /// Ends the call when the body and its iterator are gone: a response still coming is
    /// cut off and its connection closed (the reader finished, gave up, or never read).
    final class Reader: Sendable {
        let call: UpstreamCall
        init(_ call: UpstreamCall) { self.call = call }
        deinit {
            let call = self.call
            if call.eventLoop.inEventLoop {
                call.finishUnread()
            } else {
                call.eventLoop.execute { call.finishUnread() }
            }
        }
    }

    struct AsyncIterator: DeadlineIterator {
        let reader: Reader

        mutating func next() async throws -> ByteBuffer? {
            guard case .element(let part) = try await self.reader.call.nextBodyPart(before: nil) else { return nil }
            return part
        }

        mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<ByteBuffer> {
            try await self.reader.call.nextBodyPart(before: deadline)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: self.reader)
    }
}

extension UpstreamCall {
    /// The body's reader has gone: a response still coming is cut off.
    fileprivate func finishUnread() {
        self.finish(.failure(CancellationError()))
    }
}
