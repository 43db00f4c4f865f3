/// What a wait for the next element with a deadline brought.
public enum NextBeforeDeadline<Element> {
    case element(Element)
    /// The sequence ended.
    case end
    /// The deadline passed first; the iterator goes on where it was.
    case deadlinePassed
}

extension NextBeforeDeadline: Sendable where Element: Sendable {}

/// An iterator that can wait for its next element no longer than a deadline, losing
/// nothing when the deadline passes first.
///
/// The keepalive stage needs exactly this: wait for the upstream's next event until a
/// heartbeat is due. An `AsyncIterator` cannot be given up on without cancelling what it
/// reads, so without this the stage reads the upstream in a task of its own (the pump) and
/// hands events over, which costs two tasks and their switches for every relayed read.
/// The upstream body, the SSE decoder over it, and the stages between the keepalive stage
/// and the upstream implement it; ``EventStream`` says whether the stream beneath has it
/// (``EventStream/waitsWithDeadlines``).
///
/// `nonisolated(nonsending)`, in the requirement and in every layer that implements it:
/// the wait runs on its caller's executor. As plain `nonisolated` async functions, each of
/// the layers asked the runtime to switch to the generic executor on every call, which
/// with a task's executor preference takes a lock even when there is nothing to switch
/// (about 200 instructions a call, 3.6% of a relayed stream's in callgrind).
///
/// Each is also a ``ReadyIterator`` (ReadyIterator.swift), the synchronous path for what is
/// already here; a layer that does not implement it says it has none.
public protocol DeadlineIterator: ReadyIterator {
    /// The next element, `.end` when the sequence is over, or `.deadlinePassed` when
    /// `deadline` came first. Throws what ``next()`` throws (cancellation included).
    nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<Element>
}
