public import NIOCore

/// One event of a streamed response on its way through the pipeline.
///
/// It carries the bytes that go to the client (`frame.raw`) and, for chat chunks, the
/// facts the stages need (``ChunkFacts``), read once when the event enters the pipeline.
///
/// Events are copied from stage to stage and held in the async frames of every stream's
/// tasks, so the value is kept small (under 100 bytes): the facts, about 130 bytes with six
/// reference-counted fields, live behind one reference, which is set once and only read.
public struct StreamEvent: Sendable {
    /// What an event is, as far as the relay is concerned.
    public enum Kind: Sendable, Equatable {
        /// A `chat.completion.chunk` (or anything with `choices`).
        case chunk
        /// `data: [DONE]`.
        case done
        /// A block of only `:` comment lines from upstream.
        case comment
        /// An in-band error object (`data: {"error":{...}}`).
        case error
        /// A heartbeat made by the relay itself.
        case heartbeat
        /// Anything else; passed through untouched.
        case other
    }

    public var kind: Kind
    public var frame: SSEFrame
    /// For `.chunk`: what the chunk carries.
    public var facts: ChunkFacts? {
        get { self.factsStorage?.facts }
        set { self.factsStorage = newValue.map(ChunkFactsStorage.init) }
    }
    private var factsStorage: ChunkFactsStorage?

    public init(kind: Kind, frame: SSEFrame, facts: ChunkFacts? = nil) {
        self.kind = kind
        self.frame = frame
        self.factsStorage = facts.map(ChunkFactsStorage.init)
    }

    /// Classifies a decoded upstream block.
    public init(upstream frame: SSEFrame) {
        var envelope = ChunkEnvelope()
        self.init(upstream: frame, envelope: &envelope)
    }

    /// Classifies a decoded upstream block of a stream whose chunks before it left
    /// `envelope` (see ``ChunkEnvelope``).
    ///
    /// Inlined into the upstream's event reader, with the frame consumed and moved in last:
    /// called, the event was built, copied out and destroyed, and the frame copied on the
    /// way in (callgrind: about 400 instructions an event).
    @inline(__always)
    public init(upstream frame: consuming SSEFrame, envelope: inout ChunkEnvelope) {
        var kind: Kind
        var storage: ChunkFactsStorage?
        if let data = frame.data {
            let scanned = data.withUnsafeReadableBytes { raw -> ChunkScanner.Result? in
                let bytes = raw.assumingMemoryBound(to: UInt8.self)
                guard bytes.first == UInt8(ascii: "{") else {
                    return raw.spells("[DONE]") ? ChunkScanner.Result(kind: .done) : nil
                }
                return ChunkScanner.scan(bytes, envelope: &envelope)
            }
            kind = .other
            if var scanned {
                kind = scanned.kind
                // Taken, not read: the facts move into their box without a copy.
                if let facts = scanned.facts.take() { storage = ChunkFactsStorage(facts) }
            }
        } else {
            kind = frame.isCommentOnly ? .comment : .other
        }
        self.init(kind: kind, frame: frame, factsStorage: storage)
    }

    private init(kind: Kind, frame: consuming SSEFrame, factsStorage: ChunkFactsStorage?) {
        self.kind = kind
        self.frame = frame
        self.factsStorage = factsStorage
    }

    /// The bytes to write to the client.
    public var bytes: ByteBuffer { self.frame.raw }

    /// Whether this event moves the response past the commit point: it carries text,
    /// reasoning, a tool call, a refusal, a finish reason, or is an error or `[DONE]`.
    /// Until such an event has gone to the client, a response may still be retried or
    /// replaced by a clean HTTP error.
    public var commits: Bool {
        switch self.kind {
        case .chunk: self.facts?.carriesContent ?? true
        case .done, .error, .other: true
        case .comment, .heartbeat: false
        }
    }

    /// An SSE comment heartbeat (`: keepalive`).
    public static func commentHeartbeat(_ text: String = "keepalive") -> StreamEvent {
        StreamEvent(kind: .heartbeat, frame: SSEFrame(raw: ByteBuffer(string: ": \(text)\n\n"), hasComment: true))
    }

    /// A relay-made `data:` event from a JSON object.
    public static func data(_ json: JSONValue, kind: Kind) -> StreamEvent {
        let payload = ByteBuffer(string: json.serialized())
        var raw = ByteBuffer(string: "data: ")
        raw.writeImmutableBuffer(payload)
        raw.writeString("\n\n")
        return StreamEvent(kind: kind, frame: SSEFrame(raw: raw, data: payload))
    }

    /// `data: [DONE]`.
    public static let done = StreamEvent(
        kind: .done,
        frame: SSEFrame(raw: ByteBuffer(string: "data: [DONE]\n\n"), data: ByteBuffer(string: "[DONE]"))
    )
}

/// A chunk's facts, shared by the copies of its event.
private final class ChunkFactsStorage: Sendable {
    let facts: ChunkFacts
    init(_ facts: ChunkFacts) { self.facts = facts }
}
