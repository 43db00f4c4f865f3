/// The keepalive stage's rules with no I/O and no clock of its own: which upstream events
/// reach the client, and when a heartbeat is due.
///
/// The stage's stream feeds it each upstream event and asks it, whenever it has nothing to
/// return, whether to send a heartbeat or how long to wait; tests drive it with any instant.
struct KeepaliveStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// What to do with an event from upstream.
    enum EventAction: Equatable {
        /// Send it to the client as it came.
        case forward
        /// A chunk that carries nothing: drop it.
        case dropEmptyChunk
        /// An upstream comment block (`: OPENROUTER PROCESSING`): drop it.
        case dropComment
    }

    /// What to do while nothing is ready to send.
    enum TimerAction: Equatable {
        /// Nothing has gone to the client for the interval: send a heartbeat now.
        case sendHeartbeat
        /// Wait for upstream, but no later than this.
        case wait(until: Instant)
    }

    /// The longest the client goes without hearing from the relay.
    let interval: Duration
    /// When something last went to the client (or when the request started).
    private(set) var lastSent: Instant
    /// Whether a chunk naming the role has gone to the client.
    private var roleSent = false

    init(interval: Duration, lastSent: Instant) {
        precondition(interval > .zero, "a keepalive interval must be longer than zero")
        self.interval = interval
        self.lastSent = lastSent
    }

    /// When the next heartbeat is due if nothing else goes out.
    var deadline: Instant { self.lastSent.advanced(by: self.interval) }

    /// Decides on one upstream event that arrived at `now`.
    mutating func upstreamEvent(_ event: StreamEvent, at now: Instant) -> EventAction {
        let action = self.classify(event)
        if action == .forward { self.sent(at: now) }
        return action
    }

    /// Decides on one upstream event; one that is forwarded is sent, which the caller tells
    /// with ``sent(at:)``.
    mutating func classify(_ event: StreamEvent) -> EventAction {
        switch event.kind {
        case .comment:
            return .dropComment
        case .chunk:
            if let facts = event.facts {
                if !facts.carriesPayload {
                    // The opening role chunk is empty by definition, but clients expect it.
                    guard facts.hasRole, !self.roleSent else { return .dropEmptyChunk }
                }
                if facts.hasRole { self.roleSent = true }
            }
        case .done, .error, .heartbeat, .other:
            break
        }
        return .forward
    }

    /// Something went to the client at `now`: the interval starts again.
    mutating func sent(at now: Instant) {
        self.lastSent = now
    }

    /// Decides, at `now`, whether a heartbeat is due; sending one restarts the interval.
    mutating func timerCheck(at now: Instant) -> TimerAction {
        let deadline = self.deadline
        guard now >= deadline else { return .wait(until: deadline) }
        self.lastSent = now
        return .sendHeartbeat
    }
}
