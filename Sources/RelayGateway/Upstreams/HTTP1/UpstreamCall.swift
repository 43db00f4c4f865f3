import NIOCore
import NIOHTTP1
import NIOSSL
import RelayCore
import Synchronization

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
/// Confined to `eventLoop`, as its connection is, but for the body's parts (under a lock,
/// for a reader on any thread); a cancelled caller hops there.
final class UpstreamCall: @unchecked Sendable {
    /// The body's reader, suspended until a part, the end, or its deadline.
    private typealias WaitingReader = UnsafeContinuation<NextBeforeDeadline<ByteBuffer>, any Error>

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
    /// The request (its head as bytes, ``HTTP1RequestHead``, and its body) until the
    /// response's head comes: it may be sent once more on a fresh connection until then.
    /// Then it is let go: a stream lasts minutes, and a chat's body can be long.
    private var request: (head: ByteBuffer, body: ByteBuffer)?
    private let timeouts: Timeouts

    private var phase = Phase.created
    private var connection: UpstreamConnection?
    /// Sent again once already, on a fresh connection, after a reused one closed without a
    /// byte of answer (see ``connectionFailed(_:on:)``).
    private var retriedOnFreshConnection = false
    private var sawResponseBytes = false
    private var timer: Scheduled<Void>?
    /// When the last body part came, or reading last resumed after the body was full.
    private var lastActivity = NIODeadline.now()
    /// Kept until the head is told (then dropped: a stream lasts minutes, and the future
    /// would hold the head's headers that long).
    private var head: EventLoopPromise<HTTPResponseHead>?
    /// The head's future, for ``start()``, which takes it.
    nonisolated(unsafe) private var headFuture: EventLoopFuture<HTTPResponseHead>?

    /// The body between the connection (on the loop) and its reader (on any thread: a
    /// stream's task runs on the loop only while the loop serves no other request, and
    /// hopping there for every part cost more than the lock).
    private let body = Mutex(BodyState())
    /// One timer for the reader's deadlines, re-armed only when it fires early: a reader's
    /// deadline (the next heartbeat) moves later with every event, and a timer per wait was
    /// what made AsyncHTTPClient's read timeout expensive. (Its deadline is in ``BodyState``.)
    private var readerTimer: Scheduled<Void>?

    /// Bytes read and not yet taken past which the connection holds back its reads.
    ///
    /// The first read of a response brings its head and the first events together, and
    /// the relay takes them only once it has looked at the head: paused whenever parts were
    /// left, every stream stopped reading there and started again (two system calls a
    /// stream, on the way to its first byte). Bounded all the same: this, and one read.
    static let readAhead = 16 * 1024

    private struct BodyState {
        /// Parts read and not yet taken. The upstream is read only as fast as the relay takes
        /// what was read: while more than ``readAhead`` bytes wait here, the connection
        /// holds back its reads.
        var parts = CircularBuffer<ByteBuffer>(initialCapacity: 4)
        /// The bytes of `parts`.
        var bufferedBytes = 0
        /// How the body ended, once it has (parts may still wait).
        var end: Result<Void, any Error>?
        /// The reader, waiting for a part, and until when.
        var reader: WaitingReader?
        var readerDeadline: ContinuousClock.Instant?
        /// When the reader's timer fires, while it is armed.
        var timerDeadline: ContinuousClock.Instant?
        /// The connection holds back its reads.
        var paused = false

        /// Takes a part, or the end; nil while the reader must wait. `resumeReading` when
        /// the part taken was the last one of a paused connection.
        mutating func takeReady() -> (ready: Result<NextBeforeDeadline<ByteBuffer>, any Error>?, resumeReading: Bool) {
            if let part = self.parts.popFirst() {
                self.bufferedBytes -= part.readableBytes
                guard self.parts.isEmpty, self.paused else { return (.success(.element(part)), false) }
                self.paused = false
                return (.success(.element(part)), true)
            }
            switch self.end {
            case nil: return (nil, false)
            case .success: return (.success(.end), false)
            case .failure(let error): return (.failure(error), false)
            }
        }
    }

    /// The body is full: the connection holds back its reads.
    var isPaused: Bool { self.body.withLock { $0.paused } }

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
        head: ByteBuffer,
        body: ByteBuffer,
        timeouts: Timeouts
    ) -> (call: UpstreamCall, body: UpstreamBody) {
        let call = UpstreamCall(pool: pool, upstream: upstream, head: head, body: body, timeouts: timeouts)
        return (call, UpstreamBody(reader: UpstreamBody.Reader(call)))
    }

    private init(pool: UpstreamConnectionPool, upstream: String, head: ByteBuffer, body: ByteBuffer, timeouts: Timeouts) {
        self.eventLoop = pool.eventLoop
        self.pool = pool
        self.upstream = upstream
        self.request = (head, body)
        self.timeouts = timeouts
        let head = pool.eventLoop.makePromise(of: HTTPResponseHead.self)
        self.head = head
        self.headFuture = head.futureResult
    }

    /// Sends the request and waits for the response head. Cancelling the calling task
    /// cancels the request (and closes its connection).
    func start() async throws -> HTTPResponseHead {
        // Called once, before anything runs on the loop for this call.
        guard let future = self.headFuture.take() else { preconditionFailure("UpstreamCall.start() called twice") }
        self.onLoop { $0.begin() }
        return try await withTaskCancellationHandler {
            try await future.get()
        } onCancel: {
            self.abandon()
        }
    }

    /// The caller gave up (its task was cancelled, or it dropped the body): the request, or a
    /// response still coming, is cut off, and its connection closed.
    fileprivate func abandon() {
        self.onLoop { $0.finish(.failure(CancellationError())) }
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
        self.armTimer(at: .now() + self.timeouts.headWait)
        self.sendOnConnection(fresh: false)
    }

    private func sendOnConnection(fresh: Bool) {
        if !fresh, let connection = self.pool.takeIdle() {
            // The common case, without a future (each costs about 2,000 instructions).
            self.send(on: connection)
            return
        }
        self.pool.acquire(fresh: fresh).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let connection):
                self.send(on: connection)
            case .failure(let error):
                self.finish(.failure(error))
            }
        }
    }

    private func send(on connection: UpstreamConnection) {
        guard self.phase == .waitingForHead else {
            // Timed out or cancelled while waiting for it.
            self.pool.release(connection)
            return
        }
        self.connection = connection
        guard let request = self.request else { preconditionFailure("an upstream call sent after its head came") }
        connection.send(request.head, body: request.body, for: self)
    }

    // MARK: From the connection

    func receivedHead(_ head: HTTPResponseHead, on connection: UpstreamConnection) {
        self.sawResponseBytes = true
        // 1xx heads (100 Continue) are not the response.
        guard head.status.code >= 200 || head.status == .switchingProtocols else { return }
        guard self.phase == .waitingForHead else { return }
        self.phase = .streaming
        self.request = nil
        // The head's timer stays: it fires no later than the idle window's end (the head's
        // wait is at most the idle timeout), and keeps the idle timeout from then on.
        self.lastActivity = .now()
        self.head.take()?.succeed(head)
    }

    /// Gathers the parts of one read: the reader hears of them when the read is over.
    func receivedBody(_ buffer: ByteBuffer, on connection: UpstreamConnection) {
        self.body.withLock { body in
            guard body.end == nil else { return }
            body.parts.append(buffer)
            body.bufferedBytes += buffer.readableBytes
        }
    }

    /// The connection's read is over: a waiting reader takes its first part, and the
    /// body's bound applies to the read as a whole, as AsyncHTTPClient's does (a read of a
    /// burst of events is many chunked-encoding parts; bounded one by one, the second
    /// found the body full and paused the connection: a system call to stop reading and
    /// one to start again, for every read).
    func readComplete(on connection: UpstreamConnection) {
        let (read, handOver) = self.body.withLock { body -> (Bool, (WaitingReader, ByteBuffer)?) in
            guard !body.parts.isEmpty else { return (false, nil) }
            defer { body.paused = body.bufferedBytes > UpstreamCall.readAhead }
            guard let reader = body.reader.take() else { return (true, nil) }
            body.readerDeadline = nil
            let part = body.parts.removeFirst()
            body.bufferedBytes -= part.readableBytes
            return (true, (reader, part))
        }
        guard read else { return }
        self.lastActivity = .now()
        if let (reader, part) = handOver { reader.resume(returning: .element(part)) }
    }

    /// `reusable`: the parser found the connection fit for another request.
    func receivedEnd(on connection: UpstreamConnection, reusable: Bool) {
        self.readComplete(on: connection)
        let reusable = reusable && self.phase == .streaming
        self.connection = nil
        connection.responseEnded(reusable: reusable)
        self.finish(.success(()))
    }

    /// The connection closed or failed before the response ended.
    func connectionFailed(_ error: any Error, on connection: UpstreamConnection) {
        guard self.connection === connection else { return }
        self.connection = nil
        if let failure = error as? HTTP1ResponseParser.Failure {
            // Not sent again: the upstream answered, if not in HTTP/1.1.
            self.finish(.failure(RelayError.upstreamFailed("Upstream '\(self.upstream)' sent a response that is not valid HTTP/1.1: \(failure.message).")))
            return
        }
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

    // MARK: The timer

    /// Arms the call's one timer: for the head's wait, then for the idle window's end.
    /// Scheduled once a call and re-armed only when it fires early (a cancelled NIO timer
    /// costs a search of the loop's timer heap: a timer for the head cancelled when it came,
    /// then one for the idle timeout, cost about 9,000 instructions a request).
    private func armTimer(at deadline: NIODeadline) {
        self.timer = self.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.timer = nil
            self.timerFired()
        }
    }

    private func timerFired() {
        switch self.phase {
        case .created, .finished:
            return
        case .waitingForHead:
            self.finish(.failure(self.timeouts.headError))
        case .streaming:
            if self.body.withLock({ $0.paused }) {
                // Not reading: the upstream's silence does not count.
                self.lastActivity = .now()
            }
            let windowEnd = self.lastActivity + self.timeouts.idle
            if NIODeadline.now() < windowEnd {
                self.armTimer(at: windowEnd)
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
        self.request = nil
        self.timer?.cancel()
        self.timer = nil
        self.readerTimer?.cancel()
        self.readerTimer = nil
        self.connection.take()?.close()
        switch result {
        case .success:
            if !hadHead { self.head.take()?.fail(RelayError.upstreamFailed("Upstream '\(self.upstream)' ended its response without a head.")) }
        case .failure(let error):
            if !hadHead { self.head.take()?.fail(error) }
        }
        let woken = self.body.withLock { body -> (WaitingReader, Result<NextBeforeDeadline<ByteBuffer>, any Error>)? in
            // A reader that gave up wants none of what was read; parts before a failure of
            // the upstream are read first.
            if case .failure(let error) = result, error is CancellationError {
                body.parts.removeAll()
                body.bufferedBytes = 0
            }
            body.end = result
            body.timerDeadline = nil
            guard let reader = body.reader.take() else { return nil }
            body.readerDeadline = nil
            // It waited, so nothing was ready: what is ready now is the end.
            return (reader, body.takeReady().ready!)
        }
        if let (reader, outcome) = woken { reader.resume(with: outcome) }
    }

    // MARK: The body, for its one reader

    /// The next body part, `.end`, or `.deadlinePassed` when `deadline` comes first.
    /// Cancelling the calling task ends the call (and closes its connection).
    nonisolated(nonsending) func nextBodyPart(before deadline: ContinuousClock.Instant?) async throws -> NextBeforeDeadline<ByteBuffer> {
        let ready = try self.nextBodyPartIfReady()
        guard case .deadlinePassed = ready else { return ready }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { reader in
                self.wait(reader, until: deadline)
            }
        } onCancel: {
            self.abandon()
        }
    }

    /// The reader took the last part of a paused connection: reading goes on.
    private func readingResumed() {
        self.lastActivity = .now()
        self.connection?.resumeReading()
    }

    /// The next body part or the end if either is here already; `.deadlinePassed` if not.
    func nextBodyPartIfReady() throws -> NextBeforeDeadline<ByteBuffer> {
        let (ready, resumeReading) = self.body.withLock { $0.takeReady() }
        if resumeReading { self.onLoop { $0.readingResumed() } }
        return try ready?.get() ?? .deadlinePassed
    }

    private func wait(_ reader: WaitingReader, until deadline: ContinuousClock.Instant?) {
        let (ready, resumeReading, armTimer) = self.body.withLock { body -> (Result<NextBeforeDeadline<ByteBuffer>, any Error>?, Bool, Bool) in
            let (ready, resumeReading) = body.takeReady()
            if ready != nil { return (ready, resumeReading, false) }
            precondition(body.reader == nil, "an upstream body has one reader")
            body.reader = reader
            body.readerDeadline = deadline
            // A timer that fires by the deadline is armed already (it re-arms when it fires
            // early); the reader's deadlines mostly move later.
            guard let deadline, body.timerDeadline.map({ deadline < $0 }) ?? true else { return (nil, false, false) }
            body.timerDeadline = deadline
            return (nil, false, true)
        }
        if resumeReading { self.onLoop { $0.readingResumed() } }
        if let ready {
            reader.resume(with: ready)
            return
        }
        if armTimer, let deadline { self.onLoop { $0.armReaderTimer(for: deadline) } }
    }

    /// Arms the reader's timer for `deadline` (replacing one armed for later).
    private func armReaderTimer(for deadline: ContinuousClock.Instant) {
        let current = self.body.withLock { $0.timerDeadline }
        // Ended meanwhile, or a timer for an earlier deadline came since.
        guard current == deadline else { return }
        self.readerTimer?.cancel()
        self.readerTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(ContinuousClock.now.duration(to: deadline))) {
            self.readerTimer = nil
            self.readerTimerFired()
        }
    }

    private func readerTimerFired() {
        let now = ContinuousClock.now
        let (passed, rearm) = self.body.withLock { body -> (WaitingReader?, ContinuousClock.Instant?) in
            body.timerDeadline = nil
            guard body.reader != nil, let deadline = body.readerDeadline else { return (nil, nil) }
            guard now >= deadline else {
                body.timerDeadline = deadline
                return (nil, deadline)
            }
            body.readerDeadline = nil
            return (body.reader.take(), nil)
        }
        if let rearm { self.armReaderTimer(for: rearm) }
        passed?.resume(returning: .deadlinePassed)
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
        deinit { self.call.abandon() }
    }

    struct AsyncIterator: DeadlineIterator {
        let reader: Reader

        mutating func next() async throws -> ByteBuffer? {
            guard case .element(let part) = try await self.reader.call.nextBodyPart(before: nil) else { return nil }
            return part
        }

        nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<ByteBuffer> {
            try await self.reader.call.nextBodyPart(before: deadline)
        }

        mutating func nextIfReady() throws -> NextBeforeDeadline<ByteBuffer> {
            try self.reader.call.nextBodyPartIfReady()
        }

        var canBeReady: Bool { true }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: self.reader)
    }
}
