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
    public var eventType: String? {
        get { self.rareFields?.eventType }
        set { self.rareFields = RareFields.make(eventType: newValue, id: self.id, retry: self.retry) }
    }
    /// The `id` field, if any.
    public var id: String? {
        get { self.rareFields?.id }
        set { self.rareFields = RareFields.make(eventType: self.eventType, id: newValue, retry: self.retry) }
    }
    /// The `retry` field, if any and if it is a number.
    public var retry: Int? {
        get { self.rareFields?.retry }
        set { self.rareFields = RareFields.make(eventType: self.eventType, id: self.id, retry: newValue) }
    }
    /// Whether the block holds at least one `:` comment line.
    public var hasComment: Bool
    /// `event`, `id` and `retry`, which chat streams hardly use, behind one reference (nil
    /// when none is set), to keep a frame small: see ``StreamEvent``.
    private var rareFields: RareFields?

    /// True for a block made only of comment lines (`: keepalive`, `: OPENROUTER PROCESSING`).
    public var isCommentOnly: Bool {
        self.hasComment && self.data == nil && self.rareFields == nil
    }
}

// The initializer is in an extension so that the struct keeps its memberwise one, which it
// delegates to: an initializer that sets the fields one by one, once inlined, built the
// frame aside and copied it out (a retain and a release for each of its references, on
// every event; see StreamEvent).
extension SSEFrame {
    public init(
        raw: ByteBuffer,
        data: ByteBuffer? = nil,
        eventType: String? = nil,
        id: String? = nil,
        retry: Int? = nil,
        hasComment: Bool = false
    ) {
        self.init(raw: raw, data: data, hasComment: hasComment, rareFields: RareFields.make(eventType: eventType, id: id, retry: retry))
    }
}

/// The fields of an SSE block that chat streams seldom carry.
private final class RareFields: Sendable, Equatable {
    let eventType: String?
    let id: String?
    let retry: Int?

    private init(eventType: String?, id: String?, retry: Int?) {
        self.eventType = eventType
        self.id = id
        self.retry = retry
    }

    /// Nil when no field is set.
    static func make(eventType: String?, id: String?, retry: Int?) -> RareFields? {
        if eventType == nil, id == nil, retry == nil { return nil }
        return RareFields(eventType: eventType, id: id, retry: retry)
    }

    static func == (lhs: RareFields, rhs: RareFields) -> Bool {
        lhs.eventType == rhs.eventType && lhs.id == rhs.id && lhs.retry == rhs.retry
    }
}
