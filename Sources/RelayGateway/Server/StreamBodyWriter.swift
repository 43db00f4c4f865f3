import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Writes a stream's events to the client's connection, as many to one write as are ready.
///
/// Hummingbird's body writer hands each event to the connection's event loop on its own
/// and flushes it with its own `writev`: per relayed chunk a hop between threads, a trip
/// through the HTTP encoder (a chunk header each) and a system call, which were most of
/// what a relayed chunk cost. Here the relay appends an event's bytes to a pending buffer
/// and, if no flush is on its way, asks the event loop for one; the flush takes everything
/// pending by the time it runs. So a burst of events goes out in one chunked-encoding part
/// and one system call, and a lone event still goes out at once: nothing waits for a
/// timer or a batch size.
///
/// Memory is bounded: once more than ``budget`` bytes are pending or written but not yet
/// known to be taken by the kernel, ``write(_:)`` waits. A client that does not read
/// therefore stops the relay, which stops reading the upstream. Only some flushes ask NIO
/// to say when the kernel has taken them (one in ``confirmEvery`` bytes, and every one
/// made over the budget): NIO completes writes in order, so one answer confirms every
/// flush before it, and a promise on every flush cost more than the rest of the flush
/// (for each, NIO's chunked encoder makes three more promises and the futures that join
/// them). A failed confirmed write or a closed connection (the client has gone) fails
/// every later ``write(_:)``.
///
/// The response head and end go the same way, not through Hummingbird's writer: the head
/// in the same system call as the first events (the held ones, at the commit point), the
/// end after the last; a client woke once for the head and again for the first events,
/// and each went through Hummingbird's async writer (a short stream: −3% instructions,
/// one system call fewer). The end goes with the last events when they are still pending.
///
/// Body parts skip the HTTP handlers: the writer frames each as a chunked-encoding chunk
/// itself, its size line written into room kept at the front of the pending buffer, and
/// writes it from NIO's HTTP encoder's place in the pipeline, one write. Through the
/// handlers a body part was three writes (size line, bytes, CRLF), a type check at each of
/// three handlers that have nothing to do with it, and, with a confirmation promise, three
/// more promises and the futures that join them: about 10,000 instructions a flush, and a
/// stream whose events come one at a time flushes every event. The head and the end still
/// go through every handler (the connection's keep-alive state follows them), and the head
/// sets the framing this copies: HTTP/1.1 with no length is chunked.
final class StreamBodyWriter: Sendable {
    /// Bytes pending or in flight past which ``write(_:)`` waits.
    static let budget = 64 * 1024
    /// A flush asks to be told when it is written once this many bytes have been flushed
    /// since the last that asked: a client that keeps up confirms well before the budget.
    static let confirmEvery = budget / 4

    private struct State: ~Copyable {
        /// The response head, until the first flush writes it.
        var head: HTTPResponse?
        /// Appended by the relay, not yet handed to the channel.
        var pending: ByteBuffer
        /// Where the response's end is: not asked for, asked for by ``finish()`` (the next
        /// flush writes it), or written.
        var end = End.notAsked
        var flushQueued = false
        /// Bytes handed to the channel, in all.
        var flushedBytes = 0
        /// Of those, the bytes known to be written: up to the last confirmed flush.
        var confirmedBytes = 0
        /// `flushedBytes` after the last flush that asked for its confirmation.
        var lastMark = 0
        /// Confirmations received: what the write-stall watch looks at.
        var completedFlushes = 0
        var failure: (any Error)?
        var waiter: CheckedContinuation<Void, any Error>?
        var cancelled = false
        /// The write-stall watch: how long a write may wait with no flush completing, and
        /// what to call then (see ``watchForStalls(timeout:stalled:)``).
        var stallTimeout: TimeAmount?
        var stalled: (@Sendable () -> Void)?
        /// Armed only while a write waits.
        var stallTimer: Scheduled<Void>?

        /// Handed to the channel, not known to be written.
        var inFlight: Int { self.flushedBytes - self.confirmedBytes }
        var hasRoom: Bool { self.pending.readableBytes + self.inFlight <= StreamBodyWriter.budget }
    }

    private enum End {
        case notAsked, asked, written
    }

    private let channel: any Channel
    private let state: Mutex<State>
    /// Whether body parts are framed here (``chunkHeaderRoom`` kept at the front of each):
    /// when this writer writes the head, and the head makes the encoder frame the body as
    /// chunks. A flush that finds no encoder drops the room and sends the part as it was.
    private let framesChunks: Bool
    /// Where framed parts are written from: the HTTP encoder's context, looked up by the
    /// first flush with a body (on the loop, where alone it is used). Nil: not looked up yet.
    private nonisolated(unsafe) var encoder: EncoderPlace?

    private enum EncoderPlace {
        case found(ChannelHandlerContext)
        case absent
    }

    /// Room for a chunk's size line: up to eight hex digits (a part is far below 4 GiB) and CRLF.
    static let chunkHeaderRoom = 10

    /// A writer whose first flush writes `head` before the events (nil: the head is written
    /// already, or not by this writer).
    init(channel: any Channel, head: HTTPResponse? = nil) {
        self.channel = channel
        self.state = Mutex(State(head: head, pending: channel.allocator.buffer(capacity: 0)))
        self.framesChunks = head.map(Self.isFramedAsChunks) ?? false
    }

    /// Whether NIO's `HTTPResponseEncoder` frames the body after `head` as chunks: a status
    /// that may have a body and no `content-length` (Hummingbird's codec makes every head
    /// HTTP/1.1; the encoder then adds `transfer-encoding: chunked`).
    static func isFramedAsChunks(_ head: HTTPResponse) -> Bool {
        let code = head.status.code
        return code >= 200 && code != 204 && code != 304 && head.headerFields[.contentLength] == nil
    }

    /// Calls `stalled` (on the event loop, once) when a write has waited for a whole
    /// `timeout` with no flush completing: the client is not reading, its socket and our
    /// budget are full. Time the upstream is silent does not count, as nothing waits then.
    ///
    /// The timer runs only while a write waits, which a client that keeps up never makes
    /// happen: no timer per stream (a repeated task per stream was 1 to 2% of a short
    /// stream's CPU).
    func watchForStalls(timeout: Duration, stalled: @escaping @Sendable () -> Void) {
        self.state.withLock {
            $0.stallTimeout = max(TimeAmount(timeout), .nanoseconds(1))
            $0.stalled = stalled
        }
    }

    /// Ends the watch (the stream is over).
    func stopWatchingForStalls() {
        let timer = self.state.withLock { state in
            state.stalled = nil
            return state.stallTimer.take()
        }
        timer?.cancel()
    }

    /// Arms the stall timer for a write that has begun to wait; called with the lock held.
    private func armStallTimer(_ state: inout State) {
        guard let timeout = state.stallTimeout, state.stalled != nil, state.stallTimer == nil else { return }
        let flushesSoFar = state.completedFlushes
        state.stallTimer = self.channel.eventLoop.scheduleTask(in: timeout) {
            let stalled = self.state.withLock { state -> (@Sendable () -> Void)? in
                state.stallTimer = nil
                guard state.waiter != nil else { return nil }
                guard state.completedFlushes == flushesSoFar else {
                    // The client took something but the write still waits: a new timeout from now.
                    self.armStallTimer(&state)
                    return nil
                }
                return state.stalled.take()
            }
            stalled?()
        }
    }

    /// Queues `bytes` for the client; waits only when the budget is used up.
    func write(_ bytes: ByteBuffer) async throws {
        try await self.write(contentsOf: CollectionOfOne(bytes))
    }

    /// Queues several events' bytes for the client, in order.
    ///
    /// `atOnce`: the caller hands over everything it has ready in each call (the relay, when
    /// every layer beneath it has a ready path), so on the connection's loop the flush is
    /// made now: queued as a task of the loop it gathers nothing more, and costs a task per
    /// flush (per event, when events trickle: −5% of such a stream's instructions). A caller
    /// that hands events over one at a time (through the moderation stage) leaves it off,
    /// and the queued flush gathers the calls of one loop tick into one write.
    func write(contentsOf buffers: some Collection<ByteBuffer>, atOnce: Bool = false) async throws {
        let (queueFlush, hasRoom) = try self.state.withLock { state throws -> (Bool, Bool) in
            if let failure = state.failure { throw failure }
            // The empty buffer a flush leaves gets room for the whole call at once: grown event
            // by event, it was reallocated and copied five times for a round of a dozen events
            // (2% of a 50-chunk stream's instructions). Later calls before the flush (one
            // event each, through moderation) grow it as NIO does, doubling.
            let bytes = buffers.reduce(0) { $0 + $1.readableBytes }
            if bytes > 0 {
                let isEmpty = state.pending.readableBytes == 0
                let room = self.framesChunks && isEmpty ? Self.chunkHeaderRoom : 0
                if state.pending.writableBytes < room + bytes {
                    let grown = isEmpty ? room + bytes : max(room + bytes, state.pending.capacity)
                    state.pending.reserveCapacity(minimumWritableBytes: grown)
                }
                if room > 0 { state.pending.writeRepeatingByte(0, count: room) }
                // Copied in one pass into room made once: a `writeImmutableBuffer` each
                // checked the storage and its capacity again (about 250 instructions an event).
                let written = state.pending.withUnsafeMutableWritableBytes { target in
                    var offset = 0
                    for buffer in buffers {
                        buffer.withUnsafeReadableBytes { source in
                            guard let from = source.baseAddress, source.count > 0 else { return }
                            (target.baseAddress! + offset).copyMemory(from: from, byteCount: source.count)
                            offset += source.count
                        }
                    }
                    return offset
                }
                state.pending.moveWriterIndex(forwardBy: written)
            }
            let queueFlush = !state.flushQueued && (state.pending.readableBytes > 0 || state.head != nil)
            if queueFlush { state.flushQueued = true }
            return (queueFlush, state.hasRoom)
        }
        if queueFlush {
            if atOnce, self.channel.eventLoop.inEventLoop {
                self.flush()
            } else {
                self.channel.eventLoop.execute { self.flush() }
            }
        }
        if !hasRoom { try await self.waitForRoom() }
    }

    /// Writes the response's end after what is pending (in the same system call), once.
    ///
    /// On the channel's event loop (where a request's task runs) at once, so that whatever
    /// the connection writes next, the next response's head included, comes after it;
    /// off the loop it returns once the end has been handed to the channel.
    func finish() async throws {
        if self.channel.eventLoop.inEventLoop {
            self.finishOnLoop()
        } else {
            try await self.channel.eventLoop.submit { self.finishOnLoop() }.get()
        }
        if let failure = self.state.withLock({ $0.failure }) { throw failure }
    }

    private func finishOnLoop() {
        let first = self.state.withLock { state in
            guard case .notAsked = state.end else { return false }
            state.end = .asked
            return true
        }
        if first { self.flush() }
    }

    /// Runs on the channel's event loop: writes the head if it has not gone yet, everything
    /// pending as one body part, and the end once ``finish()`` asks; one flush for all.
    ///
    /// It asks for a confirmation when over the budget (a writer waits, or is about to,
    /// for one) or once ``confirmEvery`` bytes went unconfirmed; so whenever a writer waits,
    /// a confirmation is on its way or a queued flush will ask for one.
    private func flush() {
        let isActive = self.channel.isActive
        let (head, buffer, end, mark) = self.state.withLock { state -> (HTTPResponse?, ByteBuffer, Bool, Int?) in
            state.flushQueued = false
            let overBudget = !state.hasRoom
            var taken = self.channel.allocator.buffer(capacity: 0)
            swap(&taken, &state.pending)
            let head = state.head.take()
            // The end goes once, with the flush that finish() makes.
            let end = state.end == .asked
            if end { state.end = .written }
            guard isActive else {
                // Written to a closed channel, with no promise, the bytes would go nowhere unseen.
                if state.failure == nil { state.failure = ChannelError.ioOnClosedChannel }
                return (nil, taken, false, nil)
            }
            state.flushedBytes += taken.readableBytes
            guard taken.readableBytes > 0, overBudget || state.flushedBytes - state.lastMark >= Self.confirmEvery else {
                return (head, taken, end, nil)
            }
            state.lastMark = state.flushedBytes
            return (head, taken, end, state.flushedBytes)
        }
        guard isActive else {
            self.resumeWaiter(after: { _ in })
            return
        }
        guard head != nil || buffer.readableBytes > 0 || end else { return }
        // A mark comes only with body bytes (see above): their write carries the promise.
        let written = mark.map { _ in self.channel.eventLoop.makePromise(of: Void.self) }
        let pipeline = self.channel.pipeline.syncOperations
        if let head { pipeline.write(NIOAny(HTTPResponsePart.head(head)), promise: nil) }
        // Consumed: a second reference would make framing copy the part.
        var body = consume buffer
        var encoder: ChannelHandlerContext?
        if self.framesChunks, body.readableBytes > 0 {
            encoder = self.encoderContext()
            if let encoder {
                Self.frameChunk(&body)
                encoder.write(NIOAny(IOData.byteBuffer(body)), promise: written)
            } else {
                body.moveReaderIndex(forwardBy: Self.chunkHeaderRoom)
                pipeline.write(NIOAny(HTTPResponsePart.body(body)), promise: written)
            }
        } else if body.readableBytes > 0 {
            pipeline.write(NIOAny(HTTPResponsePart.body(body)), promise: written)
        }
        if end { pipeline.write(NIOAny(HTTPResponsePart.end(nil)), promise: nil) }
        // Everything above the encoder passes a flush on untouched.
        if let encoder { encoder.flush() } else { pipeline.flush() }
        guard let mark, let written else { return }
        written.futureResult.whenComplete { result in
            self.resumeWaiter(after: { state in
                state.confirmedBytes = max(state.confirmedBytes, mark)
                state.completedFlushes += 1
                if case .failure(let error) = result, state.failure == nil { state.failure = error }
            })
        }
    }

    /// The HTTP encoder's context, looked up once (on the loop).
    private func encoderContext() -> ChannelHandlerContext? {
        switch self.encoder {
        case .found(let context): return context
        case .absent: return nil
        case nil:
            let context = try? self.channel.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
            self.encoder = context.map(EncoderPlace.found) ?? .absent
            return context
        }
    }

    /// Makes `part` (``chunkHeaderRoom`` bytes, then the data) one chunk of chunked transfer
    /// encoding: the data's size in hex and CRLF written at the end of the room, the reader
    /// index moved to their start, and CRLF after the data.
    static func frameChunk(_ part: inout ByteBuffer) {
        let size = part.readableBytes - Self.chunkHeaderRoom
        let digits = max(1, (Int.bitWidth - size.leadingZeroBitCount + 3) / 4)
        let skipped = Self.chunkHeaderRoom - 2 - digits
        part.withUnsafeMutableReadableBytes { room in
            var rest = size
            for index in stride(from: skipped + digits - 1, through: skipped, by: -1) {
                let nibble = UInt8(truncatingIfNeeded: rest & 0xF)
                room[index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
                rest >>= 4
            }
            room[skipped + digits] = UInt8(ascii: "\r")
            room[skipped + digits + 1] = UInt8(ascii: "\n")
        }
        part.moveReaderIndex(forwardBy: skipped)
        part.writeInteger(UInt16(0x0D0A))
    }

    /// Applies `update`, then resumes a waiting writer if there is room now or the writes failed.
    private func resumeWaiter(after update: (inout State) -> Void) {
        let (waiter, failure) = self.state.withLock { state -> (CheckedContinuation<Void, any Error>?, (any Error)?) in
            update(&state)
            guard state.failure != nil || state.hasRoom else { return (nil, nil) }
            state.stallTimer.take()?.cancel()
            return (state.waiter.take(), state.failure)
        }
        if let failure {
            waiter?.resume(throwing: failure)
        } else {
            waiter?.resume()
        }
    }

    private func waitForRoom() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = self.state.withLock { state -> Result<Void, any Error>? in
                    if let failure = state.failure { return .failure(failure) }
                    if state.cancelled { return .failure(CancellationError()) }
                    if state.hasRoom { return .success(()) }
                    state.waiter = continuation
                    self.armStallTimer(&state)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
        } onCancel: {
            let waiter = self.state.withLock { state in
                state.cancelled = true
                state.stallTimer.take()?.cancel()
                return state.waiter.take()
            }
            waiter?.resume(throwing: CancellationError())
        }
    }
}
