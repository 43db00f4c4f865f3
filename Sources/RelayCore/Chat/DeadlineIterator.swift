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
public protocol DeadlineIterator: ReadyIterator {
    /// The next element, `.end` when the sequence is over, or `.deadlinePassed` when
    /// `deadline` came first. Throws what ``next()`` throws (cancellation included).
    nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<Element>
}

/// An iterator that can hand over an element it already has without an async call: what
/// ``DeadlineIterator/next(before:)`` would return for a deadline of now, without waiting.
///
/// An upstream read holds several events more often than not, and each went through every
/// layer's async `next`: a task frame allocated and freed per layer, an executor check and
/// the retains of each call, about a fifth of a relayed event's instructions. The relay
/// takes what is ready through this instead, synchronously, and calls `next` only when
/// nothing is. A layer that cannot tell (it would have to wait, or it has no fast path)
/// answers `.deadlinePassed`, and the relay falls back to `next`: the answer is the same
/// either way, only slower.
public protocol ReadyIterator: AsyncIteratorProtocol {
    /// The next element if it is ready now, `.end` when the sequence is over, or
    /// `.deadlinePassed` when getting the next element would wait. Throws what ``next()``
    /// throws.
    mutating func nextIfReady() throws -> NextBeforeDeadline<Element>

    /// Whether ``nextIfReady()`` can return anything but `.deadlinePassed`: this layer and
    /// every one beneath it have the fast path. When not, callers do not ask.
    var canBeReady: Bool { get }
}

extension DeadlineIterator {
    /// Nothing is ready without waiting, as far as this layer can tell.
    public mutating func nextIfReady() throws -> NextBeforeDeadline<Element> { .deadlinePassed }

    public var canBeReady: Bool { false }
}
