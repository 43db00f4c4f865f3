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

    /// The bytes to write to the client.
    public var bytes: ByteBuffer { self.frame.raw }

    /// The box of `facts`: who reads a few of them reads them there, without copying them
    /// out; two events with the same box have the same facts.
    var factsBox: ChunkFactsStorage? { self.factsStorage }

    /// Whether both events hold the one box of facts: copies of one event, or a chunk and
    /// one that matched the ``ChunkTemplate`` it left.
    func sharesFacts(with other: StreamEvent) -> Bool {
        self.factsStorage != nil && self.factsStorage === other.factsStorage
    }

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
        StreamEvent(kind: .heartbeat, frame: SSEFrame(raw: ByteBuffer(string: ": \(text)\n\n"), hasComment: true), factsStorage: nil)
    }

    /// A relay-made `data:` event from a JSON object.
    public static func data(_ json: JSONValue, kind: Kind) -> StreamEvent {
        let payload = ByteBuffer(string: json.serialized())
        var raw = ByteBuffer(string: "data: ")
        raw.writeImmutableBuffer(payload)
        raw.writeString("\n\n")
        return StreamEvent(kind: kind, frame: SSEFrame(raw: raw, data: payload), factsStorage: nil)
    }

    /// `data: [DONE]`.
    public static let done = StreamEvent(
        kind: .done,
        frame: SSEFrame(raw: ByteBuffer(string: "data: [DONE]\n\n"), data: ByteBuffer(string: "[DONE]")),
        factsStorage: nil
    )
}

// The initializers are in an extension so that the struct keeps its memberwise one
// (`init(kind:frame:factsStorage:)`), which they delegate to. An initializer that sets the
// fields one by one, once inlined, built the event aside and copied it out: a retain and a
// release for each of its references, on every event (the same held for SSEFrame).
extension StreamEvent {
    public init(kind: Kind, frame: SSEFrame, facts: ChunkFacts? = nil) {
        self.init(kind: kind, frame: frame, factsStorage: facts.map(ChunkFactsStorage.init))
    }

    /// Classifies a decoded upstream block.
    public init(upstream frame: SSEFrame) {
        var envelope = ChunkEnvelope()
        self.init(upstream: frame, envelope: &envelope)
    }

    /// Classifies a decoded upstream block of a stream whose chunks before it left
    /// `envelope` (see ``ChunkEnvelope``): a chunk that matches the template the chunk
    /// before left shares its facts; any other is scanned, and may leave a template.
    ///
    /// Inlined into the upstream's event reader, with the frame consumed and moved in last:
    /// called, the event was built, copied out and destroyed, and the frame copied on the
    /// way in (callgrind: about 400 instructions an event).
    @inline(__always)
    public init(upstream frame: consuming SSEFrame, envelope: inout ChunkEnvelope) {
        var kind = Kind.other
        var storage: ChunkFactsStorage?
        if let data = frame.data {
            data.withUnsafeReadableBytes { raw in
                let bytes = raw.assumingMemoryBound(to: UInt8.self)
                guard bytes.first == UInt8(ascii: "{") else {
                    if raw.spells("[DONE]") { kind = .done }
                    return
                }
                if let facts = envelope.template.facts(matching: bytes) {
                    kind = .chunk
                    storage = facts
                    return
                }
                guard var scanned = ChunkScanner.scan(bytes, envelope: &envelope) else { return }
                kind = scanned.kind
                // Taken, not read: the facts move into their box without a copy.
                guard let facts = scanned.facts.take() else { return }
                let box = ChunkFactsStorage(facts)
                storage = box
                if scanned.leavesTemplate { envelope.template.keep(bytes, facts: box) }
            }
        } else {
            kind = frame.isCommentOnly ? .comment : .other
        }
        self.init(kind: kind, frame: frame, factsStorage: storage)
    }
}

/// A chunk's facts, shared by the copies of its event (and by the events of the chunks
/// that match its ``ChunkTemplate``).
final class ChunkFactsStorage: Sendable {
    let facts: ChunkFacts
    init(_ facts: ChunkFacts) { self.facts = facts }
}
