public import NIOCore

/// One server-sent-event block as it crossed the wire: the lines up to and including the
/// blank line that ends it.
///
/// `raw` holds the original bytes so that a stage which does not change an event can forward
/// it untouched. The parsed fields are views into those bytes where possible.
public struct SSEFrame: Sendable, Equatable {
    /// The block's bytes, ending with its blank line. A blank line ended by a lone CR is
    /// stored as CR LF, so the bytes do not depend on how the input was split into reads.
    public var raw: ByteBuffer
    /// The `data` lines joined with LF, or nil when the block has no `data` field.
    public var data: ByteBuffer?
    /// The `event` field, if any.
    public var eventType: String?
    /// The `id` field, if any.
    public var id: String?
    /// The `retry` field, if any and if it is a number.
    public var retry: Int?
    /// Whether the block holds at least one `:` comment line.
    public var hasComment: Bool

    public init(
        raw: ByteBuffer,
        data: ByteBuffer? = nil,
        eventType: String? = nil,
        id: String? = nil,
        retry: Int? = nil,
        hasComment: Bool = false
    ) {
        self.raw = raw
        self.data = data
        self.eventType = eventType
        self.id = id
        self.retry = retry
        self.hasComment = hasComment
    }

    /// True for a block made only of comment lines (`: keepalive`, `: OPENROUTER PROCESSING`).
    public var isCommentOnly: Bool {
        self.hasComment && self.data == nil && self.eventType == nil && self.id == nil && self.retry == nil
    }
}
