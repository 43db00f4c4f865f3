import Synchronization

/// A one-shot broadcast: fired once when the drain time after SIGTERM is over, so that
/// streams still running end with an error event instead of being cut.
final class DrainSignal: Sendable {
    private struct State {
        var fired = false
        var callbacks: [Int: @Sendable () -> Void] = [:]
        var nextID = 0
    }

    private let state = Mutex(State())

    func fire() {
        let callbacks = self.state.withLock { state in
            state.fired = true
            defer { state.callbacks.removeAll() }
            return Array(state.callbacks.values)
        }
        callbacks.forEach { $0() }
    }

    /// Calls `callback` once when the signal fires (at once if it has), unless
    /// ``forget(_:)`` is called with the returned registration first. A stream's relay
    /// uses it instead of a task that waits.
    func onFire(_ callback: @escaping @Sendable () -> Void) -> Int {
        let (id, firedAlready) = self.state.withLock { state -> (Int, Bool) in
            state.nextID += 1
            if !state.fired { state.callbacks[state.nextID] = callback }
            return (state.nextID, state.fired)
        }
        if firedAlready { callback() }
        return id
    }

    func forget(_ registration: Int) {
        _ = self.state.withLock { $0.callbacks.removeValue(forKey: registration) }
    }
}
