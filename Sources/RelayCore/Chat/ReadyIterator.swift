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
