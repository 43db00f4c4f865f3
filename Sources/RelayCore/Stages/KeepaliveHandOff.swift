import NIOCore
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

    /// What the item weighs against the hand-off's byte bound.
    var byteCount: Int {
        if case .event(let event) = self { return event.bytes.readableBytes }
        return 0
    }
}

/// A bounded hand-off between the task that reads upstream (the pump) and the keepalive
/// stream's consumer.
///
/// The pump reads ahead at most ``maximumItems`` items and ``maximumBytes`` bytes of
/// events, then waits until the consumer has taken some: a slow client still slows the
/// upstream read, and memory per stream stays bounded. (With a single slot, every event
/// cost two task switches, pump and consumer waking each other; perf put that at a third
/// of the default pipeline's CPU per chunk. Now a burst of ready events crosses in one.)
/// The consumer waits for an item or for a wake-up (its heartbeat timer, or cancellation)
/// without ever cancelling the upstream read, which a timer firing must not do. Closing
/// the hand-off (the consumer was cancelled or dropped) cancels the pump and with it the
/// upstream read.
final class KeepaliveHandOff: Sendable {
    /// Items the pump may read ahead of the consumer.
    static let maximumItems = 16
    /// Event bytes the pump may read ahead of the consumer (one larger event may pass).
    static let maximumBytes = 64 * 1024

    private struct State {
        var items = CircularBuffer<KeepaliveUpstreamItem>(initialCapacity: 4)
        /// The event bytes in `items`.
        var bytes = 0
        /// The consumer, waiting for an item or a wake-up.
        var consumer: CheckedContinuation<Void, Never>?
        /// A wake-up that came while the consumer was not waiting.
        var consumerWoken = false
        /// The pump, waiting for room.
        var producer: CheckedContinuation<Bool, Never>?
        var pump: Task<Void, Never>?
        var pumpStarted = false
        /// The consumer's timer (a ``KeepaliveAlarm`` on the consumer's clock), once it waited.
        var alarm: (any KeepaliveAlarmStopping)?
        var closed = false

        var isFull: Bool { self.items.count >= KeepaliveHandOff.maximumItems || self.bytes >= KeepaliveHandOff.maximumBytes }
    }

    private let state = Mutex(State())

    init() {}

    /// Whether the consumer side has gone.
    var isClosed: Bool { self.state.withLock { $0.closed } }

    /// For tests: the items waiting, and whether the pump waits for room.
    var queuedItems: Int { self.state.withLock { $0.items.count } }
    var isPumpWaiting: Bool { self.state.withLock { $0.producer != nil } }

    /// Starts the pump once; later calls do nothing.
    func startPump(_ body: @escaping @Sendable () async -> Void) {
        let start = self.state.withLock { state in
            guard !state.pumpStarted, !state.closed else { return false }
            state.pumpStarted = true
            return true
        }
        guard start else { return }
        let task = StreamTasks.start { await body() }
        let closedMeanwhile = self.state.withLock { state in
            guard !state.closed else { return true }
            state.pump = task
            return false
        }
        if closedMeanwhile { task.cancel() }
    }

    /// Pump side: hands over `item`; returns true when the pump may read on (at once while
    /// there is room, else once the consumer has taken enough), false when the consumer
    /// has gone.
    func deliver(_ item: KeepaliveUpstreamItem) async -> Bool {
        let (accepted, full, consumer) = self.state.withLock { state -> (Bool, Bool, CheckedContinuation<Void, Never>?) in
            guard !state.closed else { return (false, false, nil) }
            state.items.append(item)
            state.bytes += item.byteCount
            defer { state.consumer = nil }
            return (true, state.isFull, state.consumer)
        }
        consumer?.resume()
        guard accepted else { return false }
        guard full else { return true }
        return await withCheckedContinuation { (producer: CheckedContinuation<Bool, Never>) in
            let answer = self.state.withLock { state -> Bool? in
                if state.closed { return false }
                if !state.isFull { return true }
                state.producer = producer
                return nil
            }
            if let answer { producer.resume(returning: answer) }
        }
    }

    /// Consumer side: takes the oldest item, if any, and lets a waiting pump read on.
    func take() -> KeepaliveUpstreamItem? {
        let (item, producer) = self.state.withLock { state -> (KeepaliveUpstreamItem?, CheckedContinuation<Bool, Never>?) in
            guard let item = state.items.popFirst() else { return (nil, nil) }
            state.bytes -= item.byteCount
            guard !state.isFull else { return (item, nil) }
            defer { state.producer = nil }
            return (item, state.producer)
        }
        producer?.resume(returning: true)
        return item
    }

    /// Consumer side: waits until an item is ready or `deadline` passes on `clock`; returns
    /// early when the calling task is cancelled, which closes the hand-off.
    ///
    /// The deadline is kept by one ``KeepaliveAlarm`` for the whole stream, not a timer per
    /// wait: a stream waits once per event, and a timer task per wait cost the default
    /// pipeline about a quarter of its CPU per relayed chunk (a task group, a child task and
    /// a dispatch timer each time; perf). A deadline that moves later costs a store.
    func wait<C: Clock<Duration>>(until deadline: C.Instant, on clock: C) async {
        await withTaskCancellationHandler {
            let alarm = self.alarm(on: clock)
            alarm.set(deadline)
            await self.waitForItem()
            alarm.set(nil)
            self.state.withLock { $0.consumerWoken = false }
        } onCancel: {
            self.close()
        }
    }

    /// The hand-off's alarm, made on first use; it always runs on the clock it was made with.
    private func alarm<C: Clock<Duration>>(on clock: C) -> KeepaliveAlarm<C> {
        let (alarm, closed) = self.state.withLock { state -> (KeepaliveAlarm<C>, Bool) in
            if let existing = state.alarm { return (unsafeDowncast(existing, to: KeepaliveAlarm<C>.self), state.closed) }
            let made = KeepaliveAlarm(clock: clock) { [weak self] in self?.wake() }
            state.alarm = made
            return (made, state.closed)
        }
        if closed { alarm.stop() }
        return alarm
    }

    private func waitForItem() async {
        await withCheckedContinuation { (consumer: CheckedContinuation<Void, Never>) in
            let ready = self.state.withLock { state in
                if !state.items.isEmpty || state.consumerWoken || state.closed { return true }
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
        let (consumer, producer, pump, alarm) = self.state.withLock {
            state -> (CheckedContinuation<Void, Never>?, CheckedContinuation<Bool, Never>?, Task<Void, Never>?, (any KeepaliveAlarmStopping)?) in
            state.closed = true
            state.items.removeAll()
            state.bytes = 0
            defer {
                state.consumer = nil
                state.producer = nil
                state.pump = nil
                state.alarm = nil
            }
            return (state.consumer, state.producer, state.pump, state.alarm)
        }
        pump?.cancel()
        alarm?.stop()
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

/// The body of the pump task: reads upstream into the hand-off, as far ahead as it allows.
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

/// Stops an alarm whose clock type the caller does not know.
protocol KeepaliveAlarmStopping: AnyObject, Sendable {
    func stop()
}

/// One timer for a stream's whole life: it sleeps until the deadline the consumer waits
/// for and calls `fire` if the consumer is still waiting for it then.
///
/// A deadline that moves later while the alarm sleeps costs nothing at once: the alarm
/// wakes at the old one, sees the new one and sleeps again. Only a deadline earlier than
/// the one it sleeps on restarts it.
///
/// On the real clock (`ContinuousClock`, the daemon's) the alarm is a callback on
/// ``TimerQueue``: no task per stream waits for it, and stopping it keeps nothing. (It was
/// a task sleeping with `ContinuousClock.sleep`; on Linux a cancelled sleep returns at once
/// but Dispatch keeps its job, and the task with it, until the original deadline, so every
/// request's alarm outlived it by a keepalive interval: the soak's RSS growth.) On other
/// clocks (the tests' manual clock) a task sleeps on the clock.
final class KeepaliveAlarm<C: Clock<Duration>>: KeepaliveAlarmStopping, @unchecked Sendable {
    private struct State {
        /// The deadline the consumer waits for; nil while it does not wait.
        var target: C.Instant?
        /// What the alarm waits for (its task's sleep, or on the real clock its callback).
        var sleepingUntil: C.Instant?
        /// The task, parked until there is a target.
        var parked: CheckedContinuation<C.Instant?, Never>?
        var task: Task<Void, Never>?
        /// On the real clock: the scheduled callback, and which one is current.
        var timer: UInt64?
        var timerGeneration: UInt64 = 0
        var stopped = false
    }

    private let clock: C
    /// `clock`, when it is the real one: the alarm then runs on ``TimerQueue``.
    private let realClock: ContinuousClock?
    private let fire: @Sendable () -> Void
    private let state = Mutex(State())

    init(clock: C, fire: @escaping @Sendable () -> Void) {
        self.clock = clock
        self.realClock = clock as? ContinuousClock
        self.fire = fire
    }

    /// Wakes the consumer at `deadline` (nil: the consumer no longer waits).
    func set(_ deadline: C.Instant?) {
        let action = self.state.withLock { state -> AlarmAction in
            guard !state.stopped else { return .none }
            state.target = deadline
            guard let deadline else { return .none }
            if self.realClock != nil {
                if let sleepingUntil = state.sleepingUntil, !(deadline < sleepingUntil) { return .none }
                self.schedule(for: deadline, in: &state)
                return .none
            }
            if let parked = state.parked {
                state.parked = nil
                state.sleepingUntil = deadline
                return .resume(parked, deadline)
            }
            if state.task == nil { return .start }
            if let sleepingUntil = state.sleepingUntil, deadline < sleepingUntil {
                defer { state.task = nil; state.sleepingUntil = nil }
                return .restart(state.task)
            }
            return .none
        }
        switch action {
        case .none: break
        case .resume(let parked, let deadline): parked.resume(returning: deadline)
        case .start: self.start()
        case .restart(let old):
            old?.cancel()
            self.start()
        }
    }

    /// What `set` does once the lock is released.
    private enum AlarmAction {
        case none
        case resume(CheckedContinuation<C.Instant?, Never>, C.Instant)
        case start
        case restart(Task<Void, Never>?)
    }

    func stop() {
        let (parked, task) = self.state.withLock { state in
            state.stopped = true
            if let timer = state.timer { TimerQueue.shared.cancel(timer) }
            defer { state.parked = nil; state.task = nil; state.timer = nil }
            return (state.parked, state.task)
        }
        parked?.resume(returning: nil)
        task?.cancel()
    }

    /// Real clock: (re)schedules the callback for `deadline`, rounded up to a tenth of a
    /// second (``TimerQueue`` keeps a FIFO per distinct duration): a heartbeat may come that
    /// much late, never early.
    private func schedule(for target: C.Instant, in state: inout State) {
        guard let clock = self.realClock, let deadline = target as? ContinuousClock.Instant else { return }
        if let timer = state.timer { TimerQueue.shared.cancel(timer) }
        state.timerGeneration &+= 1
        let generation = state.timerGeneration
        state.sleepingUntil = target
        state.timer = TimerQueue.shared.schedule(after: Self.roundedUpToTenth(clock.now.duration(to: deadline))) { [weak self] in
            self?.timerFired(generation)
        }
    }

    /// Real clock: the callback came; fires if the consumer's deadline has passed, or
    /// schedules again for a deadline that moved later meanwhile.
    private func timerFired(_ generation: UInt64) {
        let due = self.state.withLock { state -> Bool in
            guard state.timerGeneration == generation, !state.stopped else { return false }
            state.timer = nil
            state.sleepingUntil = nil
            guard let target = state.target else { return false }
            if self.clock.now >= target {
                state.target = nil
                return true
            }
            self.schedule(for: target, in: &state)
            return false
        }
        if due { self.fire() }
    }

    private func start() {
        let task = StreamTasks.start { await self.run() }
        let stoppedMeanwhile = self.state.withLock { state in
            guard !state.stopped else { return true }
            state.task = task
            return false
        }
        if stoppedMeanwhile { task.cancel() }
    }

    private func run() async {
        while !Task.isCancelled {
            let next: C.Instant? = await withCheckedContinuation { (parked: CheckedContinuation<C.Instant?, Never>) in
                let ready = self.state.withLock { state -> C.Instant?? in
                    if state.stopped { return .some(nil) }
                    if let target = state.target {
                        state.sleepingUntil = target
                        return .some(target)
                    }
                    state.parked = parked
                    return nil
                }
                if let ready { parked.resume(returning: ready) }
            }
            guard let deadline = next else { return }
            do {
                try await self.clock.sleep(until: deadline, tolerance: nil)
            } catch {
                return  // stopped, or restarted for an earlier deadline
            }
            let due = self.state.withLock { state -> Bool in
                state.sleepingUntil = nil
                guard let target = state.target, self.clock.now >= target else { return false }
                state.target = nil
                return true
            }
            if due { self.fire() }
        }
    }

    /// `duration` rounded up to a whole tenth of a second (see ``schedule(for:in:)``).
    static func roundedUpToTenth(_ duration: Duration) -> Duration {
        guard duration > .zero else { return .zero }
        let (seconds, attoseconds) = duration.components
        let tenth: Int64 = 100_000_000_000_000_000  // attoseconds
        return .milliseconds(100 * (seconds * 10 + (attoseconds + tenth - 1) / tenth))
    }
}
