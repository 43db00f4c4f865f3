import HTTPTypes
import NIOCore
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

    /// A writer whose first flush writes `head` before the events (nil: the head is written
    /// already, or not by this writer).
    init(channel: any Channel, head: HTTPResponse? = nil) {
        self.channel = channel
        self.state = Mutex(State(head: head, pending: channel.allocator.buffer(capacity: 0)))
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
    func write(contentsOf buffers: some Sequence<ByteBuffer>) async throws {
        let (queueFlush, hasRoom) = try self.state.withLock { state throws -> (Bool, Bool) in
            if let failure = state.failure { throw failure }
            for buffer in buffers { state.pending.writeImmutableBuffer(buffer) }
            let queueFlush = !state.flushQueued && (state.pending.readableBytes > 0 || state.head != nil)
            if queueFlush { state.flushQueued = true }
            return (queueFlush, state.hasRoom)
        }
        if queueFlush {
            self.channel.eventLoop.execute { self.flush() }
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
        if buffer.readableBytes > 0 { pipeline.write(NIOAny(HTTPResponsePart.body(buffer)), promise: written) }
        if end { pipeline.write(NIOAny(HTTPResponsePart.end(nil)), promise: nil) }
        pipeline.flush()
        guard let mark, let written else { return }
        written.futureResult.whenComplete { result in
            self.resumeWaiter(after: { state in
                state.confirmedBytes = max(state.confirmedBytes, mark)
                state.completedFlushes += 1
                if case .failure(let error) = result, state.failure == nil { state.failure = error }
            })
        }
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
