import Synchronization

/// A clock that moves only when a test moves it.
///
/// `sleep(until:)` suspends until ``advance(by:)`` or ``advance(to:)`` reaches the
/// deadline (or the sleeping task is cancelled), so timing code runs deterministically
/// and instantly. ``nextSleeperDeadline()`` lets a test wait until the code under test is
/// actually waiting on the clock, instead of sleeping and hoping.
final class ManualClock: Clock {
    /// A point on the manual time line: how far it is from the clock's start.
    struct Instant: InstantProtocol, CustomStringConvertible {
        var offset: Duration

        func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - self.offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        var description: String { "t+\(self.offset)" }
    }

    private struct Sleeper {
        var id: Int
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var nextID = 0
        var sleepers: [Sleeper] = []
        /// Sleeps cancelled before they were registered.
        var cancelledIDs: Set<Int> = []
        /// Tests waiting for someone to sleep.
        var watchers: [CheckedContinuation<Instant, Never>] = []
    }

    private let state = Mutex(State())

    init() {}

    /// The start of the clock's time line.
    static let start = Instant(offset: .zero)

    var now: Instant { self.state.withLock { $0.now } }
    var minimumResolution: Duration { .zero }

    /// How many tasks are sleeping on the clock.
    var sleeperCount: Int { self.state.withLock { $0.sleepers.count } }

    func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        let id = self.state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Start { case cancelled, due, registered([CheckedContinuation<Instant, Never>]) }
                let start = self.state.withLock { state -> Start in
                    if state.cancelledIDs.remove(id) != nil { return .cancelled }
                    if deadline <= state.now { return .due }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    defer { state.watchers = [] }
                    return .registered(state.watchers)
                }
                switch start {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .due: continuation.resume()
                case .registered(let watchers): watchers.forEach { $0.resume(returning: deadline) }
                }
            }
        } onCancel: {
            let sleeper = self.state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelledIDs.insert(id)
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `duration`, waking every sleeper whose deadline has come.
    func advance(by duration: Duration) {
        self.advance(to: self.now.advanced(by: duration))
    }

    /// Moves time to `instant` (never backwards), waking every sleeper whose deadline has come.
    func advance(to instant: Instant) {
        let due = self.state.withLock { state -> [Sleeper] in
            state.now = max(state.now, instant)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        due.forEach { $0.continuation.resume() }
    }

    /// Waits until some task sleeps on the clock, and returns the earliest deadline.
    func nextSleeperDeadline() async -> Instant {
        await withCheckedContinuation { (watcher: CheckedContinuation<Instant, Never>) in
            let earliest = self.state.withLock { state -> Instant? in
                if let earliest = state.sleepers.map(\.deadline).min() { return earliest }
                state.watchers.append(watcher)
                return nil
            }
            if let earliest { watcher.resume(returning: earliest) }
        }
    }
}
