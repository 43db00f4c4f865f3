import Dispatch
import NIOCore
import Synchronization

/// Sleeps for the daemon's per-request timeouts, and scheduled callbacks, all on one
/// dispatch timer, that free everything the moment they are cancelled.
///
/// Why not `Task.sleep`: on Linux a cancelled `Task.sleep` returns at once, but the job it
/// scheduled stays with Dispatch, holding its task, until the original deadline. A head
/// timeout of 60 s that almost never fires then kept one task per request of the last
/// minute alive: about 30,000 in the soak (heaptrack), and the RSS grew with them. Here a
/// sleep is an entry in a FIFO per duration (deadlines made under one lock from one clock
/// arrive in order, so each FIFO is sorted) and a continuation in a table; cancelling removes
/// the continuation, and the entry is dropped when it reaches the front of its FIFO.
public final class TimerQueue: Sendable {
    /// The queue the daemon's timeouts share.
    public static let shared = TimerQueue()

    private struct Entry {
        var deadline: UInt64  // DispatchTime uptime nanoseconds
        var id: UInt64
    }

    /// What waits for an entry: a sleeping task, or a callback.
    private enum Waiter {
        case sleeper(CheckedContinuation<Void, any Error>)
        case action(@Sendable () -> Void)
    }

    private struct State {
        var nextID: UInt64 = 0
        var fifos: [Duration: CircularBuffer<Entry>] = [:]
        var waiters: [UInt64: Waiter] = [:]
        /// The deadline the dispatch timer is set for, if it is set.
        var armed: UInt64?
    }

    private let state = Mutex(State())
    /// Dispatch sources are thread-safe; Dispatch's overlay does not say so on Linux.
    private nonisolated(unsafe) let timer: any DispatchSourceTimer

    public init() {
        // The handler only takes what is due and resumes it (each task then runs at its own
        // priority). At default QoS a busy pool of higher-priority tasks starved it for
        // seconds in the test suite, so it runs above them.
        let queue = DispatchQueue(label: "chatrelayd.timer-queue", qos: .userInteractive)
        self.timer = DispatchSource.makeTimerSource(queue: queue)
        // The handler is set after `self` is whole; the timer only fires once armed.
        self.timer.setEventHandler { [weak self] in self?.fire() }
        self.timer.resume()
    }

    deinit {
        self.timer.cancel()
    }

    /// Sleeps for `duration`; throws `CancellationError` (at once, keeping nothing) when the
    /// task is cancelled first.
    public func sleep(for duration: Duration) async throws {
        try await self.sleep(for: duration, onRegistered: {})
    }

    /// ``sleep(for:)``, calling `onRegistered` once the sleep is in the queue (for tests,
    /// which must know that without polling).
    func sleep(for duration: Duration, onRegistered: () -> Void) async throws {
        let id = self.state.withLock { state -> UInt64 in
            state.nextID &+= 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (sleeper: CheckedContinuation<Void, any Error>) in
                let registered = self.state.withLock { state -> Bool in
                    // Checked under the lock: a cancellation that came earlier found no
                    // sleeper to wake, so this must not register one.
                    if Task.isCancelled { return false }
                    self.enqueue(.sleeper(sleeper), id: id, after: duration, in: &state)
                    return true
                }
                if registered {
                    onRegistered()
                } else {
                    sleeper.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            if case .sleeper(let sleeper) = self.state.withLock({ $0.waiters.removeValue(forKey: id) }) {
                sleeper.resume(throwing: CancellationError())
            }
        }
    }

    /// Calls `action` on the queue's own thread once `duration` has passed, unless
    /// ``cancel(_:)`` comes first; no task waits meanwhile. Returns the id to cancel it by.
    /// `action` must be short (it runs where the other timeouts are handed out).
    public func schedule(after duration: Duration, _ action: @escaping @Sendable () -> Void) -> UInt64 {
        self.state.withLock { state in
            state.nextID &+= 1
            self.enqueue(.action(action), id: state.nextID, after: duration, in: &state)
            return state.nextID
        }
    }

    /// Forgets a scheduled action; nothing happens if it has run already.
    public func cancel(_ id: UInt64) {
        _ = self.state.withLock { $0.waiters.removeValue(forKey: id) }
    }

    private func enqueue(_ waiter: Waiter, id: UInt64, after duration: Duration, in state: inout State) {
        let deadline = DispatchTime.now().uptimeNanoseconds &+ Self.nanoseconds(duration)
        state.fifos[duration, default: CircularBuffer(initialCapacity: 16)].append(Entry(deadline: deadline, id: id))
        state.waiters[id] = waiter
        if state.armed.map({ deadline < $0 }) ?? true {
            state.armed = deadline
            self.timer.schedule(deadline: DispatchTime(uptimeNanoseconds: deadline), leeway: .milliseconds(1))
        }
    }

    /// How many sleeps and scheduled actions are waiting (for tests).
    var waiting: Int { self.state.withLock { $0.waiters.count } }

    /// The timer fired: wakes every sleeper and runs every action that is due, drops
    /// cancelled entries from the front of each FIFO, and sets the timer for the earliest
    /// deadline left.
    private func fire() {
        let due = self.state.withLock { state -> [Waiter] in
            let now = DispatchTime.now().uptimeNanoseconds
            var due: [Waiter] = []
            var earliest: UInt64?
            for duration in Array(state.fifos.keys) {
                var fifo = state.fifos.removeValue(forKey: duration)!
                while let first = fifo.first {
                    if let waiter = state.waiters[first.id] {
                        guard first.deadline <= now else { break }
                        state.waiters[first.id] = nil
                        due.append(waiter)
                    }
                    fifo.removeFirst()
                }
                if let first = fifo.first {
                    earliest = min(earliest ?? first.deadline, first.deadline)
                    state.fifos[duration] = fifo
                }
            }
            state.armed = earliest
            if let earliest {
                self.timer.schedule(deadline: DispatchTime(uptimeNanoseconds: earliest), leeway: .milliseconds(1))
            }
            return due
        }
        for waiter in due {
            switch waiter {
            case .sleeper(let sleeper): sleeper.resume()
            case .action(let action): action()
            }
        }
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let whole = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if whole.overflow { return UInt64.max / 2 }
        return whole.partialValue &+ UInt64(max(attoseconds, 0) / 1_000_000_000)
    }
}
