import Synchronization

/// What the keepalive pump reads from below, one item at a time.
enum KeepaliveUpstreamItem: Sendable {
    /// The response `next` returned (only when the stage called `next` inside the pump).
    case head(ChatResponse)
    case event(StreamEvent)
    /// The upstream stream ended.
    case end
    /// `next` or the upstream stream threw.
    case failure(any Error)
}

/// A single-slot hand-off between the task that reads upstream (the pump) and the
/// keepalive stream's consumer.
///
/// The pump puts one item in the slot and waits until the consumer takes it before it
/// reads the next: at most one item waits here and at most one read is in flight, so a
/// slow client still slows the upstream read. The consumer waits for an item or for a
/// wake-up (its heartbeat timer, or cancellation) without ever cancelling the upstream
/// read, which a timer firing must not do. Closing the hand-off (the consumer was
/// cancelled or dropped) cancels the pump and with it the upstream read.
final class KeepaliveHandOff: Sendable {
    private struct State {
        var item: KeepaliveUpstreamItem?
        /// The consumer, waiting for an item or a wake-up.
        var consumer: CheckedContinuation<Void, Never>?
        /// A wake-up that came while the consumer was not waiting.
        var consumerWoken = false
        /// The pump, waiting for its item to be taken.
        var producer: CheckedContinuation<Bool, Never>?
        var pump: Task<Void, Never>?
        var pumpStarted = false
        var closed = false
    }

    private let state = Mutex(State())

    init() {}

    /// Whether the consumer side has gone.
    var isClosed: Bool { self.state.withLock { $0.closed } }

    /// Starts the pump once; later calls do nothing.
    func startPump(_ body: @escaping @Sendable () async -> Void) {
        let start = self.state.withLock { state in
            guard !state.pumpStarted, !state.closed else { return false }
            state.pumpStarted = true
            return true
        }
        guard start else { return }
        let task = Task { await body() }
        let closedMeanwhile = self.state.withLock { state in
            guard !state.closed else { return true }
            state.pump = task
            return false
        }
        if closedMeanwhile { task.cancel() }
    }

    /// Pump side: hands over `item` and returns once the consumer took it (true), or at
    /// once when the consumer has gone (false).
    func deliver(_ item: KeepaliveUpstreamItem) async -> Bool {
        await withCheckedContinuation { (producer: CheckedContinuation<Bool, Never>) in
            let (accepted, consumer) = self.state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                guard !state.closed else { return (false, nil) }
                precondition(state.item == nil && state.producer == nil, "the keepalive pump delivers one item at a time")
                state.item = item
                state.producer = producer
                defer { state.consumer = nil }
                return (true, state.consumer)
            }
            if !accepted { producer.resume(returning: false) }
            consumer?.resume()
        }
    }

    /// Consumer side: takes the waiting item, if any, and lets the pump read on.
    func take() -> KeepaliveUpstreamItem? {
        let (item, producer) = self.state.withLock { state -> (KeepaliveUpstreamItem?, CheckedContinuation<Bool, Never>?) in
            guard let item = state.item else { return (nil, nil) }
            state.item = nil
            defer { state.producer = nil }
            return (item, state.producer)
        }
        producer?.resume(returning: true)
        return item
    }

    /// Consumer side: waits until an item is ready or `deadline` passes on `clock`; returns
    /// early when the calling task is cancelled, which closes the hand-off.
    func wait<C: Clock>(until deadline: C.Instant, on clock: C) async {
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await clock.sleep(until: deadline, tolerance: nil)
                    } catch {
                        return  // cancelled: the item came first
                    }
                    self.wake()
                }
                await self.waitForItem()
                group.cancelAll()
            }
            // The timer task has finished, so no stale wake-up can arrive after this.
            self.state.withLock { $0.consumerWoken = false }
        } onCancel: {
            self.close()
        }
    }

    private func waitForItem() async {
        await withCheckedContinuation { (consumer: CheckedContinuation<Void, Never>) in
            let ready = self.state.withLock { state in
                if state.item != nil || state.consumerWoken || state.closed { return true }
                state.consumer = consumer
                return false
            }
            if ready { consumer.resume() }
        }
    }

    private func wake() {
        let consumer = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let consumer = state.consumer else {
                state.consumerWoken = true
                return nil
            }
            state.consumer = nil
            return consumer
        }
        consumer?.resume()
    }

    /// The consumer has gone: wakes both sides and cancels the pump (and so the upstream read).
    func close() {
        let (consumer, producer, pump) = self.state.withLock {
            state -> (CheckedContinuation<Void, Never>?, CheckedContinuation<Bool, Never>?, Task<Void, Never>?) in
            state.closed = true
            state.item = nil
            defer {
                state.consumer = nil
                state.producer = nil
                state.pump = nil
            }
            return (state.consumer, state.producer, state.pump)
        }
        pump?.cancel()
        consumer?.resume()
        producer?.resume(returning: false)
    }
}

/// Owns a hand-off on behalf of the response's stream and its iterator: when the last of
/// them is dropped, the pump is cancelled.
final class KeepaliveSession: Sendable {
    let handOff: KeepaliveHandOff
    private let pump: @Sendable () async -> Void

    /// `pump` must not capture the session, or the session would never be released.
    init(handOff: KeepaliveHandOff, pump: @escaping @Sendable () async -> Void) {
        self.handOff = handOff
        self.pump = pump
    }

    func startPump() { self.handOff.startPump(self.pump) }

    deinit { self.handOff.close() }
}

/// Held by the keepalive stream's iterator only: a consumer that drops its iterator has
/// gone, and the upstream read stops with it.
final class KeepaliveIteratorLifetime: Sendable {
    private let handOff: KeepaliveHandOff

    init(_ handOff: KeepaliveHandOff) { self.handOff = handOff }

    deinit { self.handOff.close() }
}

/// The body of the pump task: reads upstream one item at a time into the hand-off.
enum KeepalivePump {
    /// Calls `head` first when given (the before-commit mode), then reads the events of
    /// the response it returned, or `events`.
    static func run(
        head: (@Sendable () async throws -> ChatResponse)?,
        events: EventStream?,
        into handOff: KeepaliveHandOff
    ) async {
        var stream = events
        if let head {
            let response: ChatResponse
            do {
                response = try await head()
            } catch {
                _ = await handOff.deliver(.failure(error))
                return
            }
            guard await handOff.deliver(.head(response)) else { return }
            guard case .events(let events) = response.body else { return }
            stream = events
        }
        guard let stream else { return }
        var iterator = stream.makeAsyncIterator()
        while true {
            let item: KeepaliveUpstreamItem
            do {
                item = try await iterator.next().map { .event($0) } ?? .end
            } catch {
                item = .failure(error)
            }
            guard await handOff.deliver(item), case .event = item else { return }
        }
    }
}
