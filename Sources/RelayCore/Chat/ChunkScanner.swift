#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// Reads an upstream event's JSON once, straight from its bytes, into what the relay needs:
/// whether it is a chunk, an error or something else, and the chunk's ``ChunkFacts``.
///
/// The hot path of every relayed event. It gives the same answers as building a
/// ``JSONValue`` and calling ``ChunkFacts/init(_:)`` (a test holds the two together over
/// the whole corpus), without making a tree: values the facts do not need are skipped in
/// place, and only `usage` (rare, once per stream) is built. Strings that are skipped (the
/// content among them: the facts need only know whether it is empty) have their escapes
/// checked but not their UTF-8; the relay forwards the bytes as they came anyway. A chunk
/// that repeats the stream's chunk before but for such strings is not walked at all (see
/// ``ChunkTemplate``).
///
/// An object that repeats a member name (no provider sends one; the fuzzer made one) is
/// handed to the tree, which keeps the last, as the client's JSON parser will: the scanner
/// alone would add the repeats up, and moderation would judge other text than the client sees.
enum ChunkScanner {
    struct Result {
        var kind: StreamEvent.Kind
        var facts: ChunkFacts?
        /// The chunk can be the stream's ``ChunkTemplate``: its holes are in the envelope's.
        var leavesTemplate = false
    }

    /// Nil when `bytes` is not one JSON object. `envelope` holds the `id` and `model` of the
    /// stream's chunk before, and then of this one; and, when this one can be a template,
    /// where its holes lie (its template otherwise forgotten).
    static func scan(_ bytes: UnsafeBufferPointer<UInt8>, envelope: inout ChunkEnvelope) -> Result? {
        var parser = JSONParser(bytes)
        let recordsHoles = bytes.count <= ChunkTemplate.maximumSize
        if recordsHoles { parser.holes = envelope.template.forget() }
        let scanned = try? parser.scanEvent(envelope: &envelope)
        if recordsHoles { envelope.template.holes = parser.holes.take()! }
        guard var result = scanned else { return nil }
        if parser.sawRepeatedName { return Self.reference(Array(bytes)) }
        result.leavesTemplate = recordsHoles && result.kind == .chunk && result.facts?.usage == nil
            && envelope.template.holes.count <= ChunkTemplate.maximumHoles
        return result
    }

    /// Nil when `bytes` is not one JSON object.
    static func scan(_ bytes: UnsafeBufferPointer<UInt8>) -> Result? {
        var envelope = ChunkEnvelope()
        return Self.scan(bytes, envelope: &envelope)
    }

    /// The same answer the slow way, from a parsed tree: the definition the scanner is
    /// tested against.
    static func reference(_ bytes: [UInt8]) -> Result? {
        guard case .object(let object)? = try? JSONValue(parsing: bytes) else { return nil }
        if object["choices"] != nil || object["object"]?.stringValue == "chat.completion.chunk" {
            return Result(kind: .chunk, facts: ChunkFacts(object))
        }
        return Result(kind: object["error"] != nil ? .error : .other, facts: nil)
    }
}

extension JSONParser {
    fileprivate mutating func scanEvent(envelope: inout ChunkEnvelope) throws(Failure) -> ChunkScanner.Result {
        self.skipWhitespace()
        guard self.current == UInt8(ascii: "{") else { throw self.failure("not an object") }
        var facts = ChunkFacts()
        var payload = false
        var hasChoices = false
        var isChunkObject = false
        var hasError = false
        var topUsage: JSONValue?
        var groqUsage: JSONValue?
        try self.distinctMembers { [envelope] parser, key throws(Failure) in
            // The names every chunk has come first: each case tried costs a comparison.
            switch key {
            case "model":
                facts.model = try parser.stringUnlessOther(sameAs: envelope.model)
            case "id":
                facts.id = try parser.stringUnlessOther(sameAs: envelope.id)
            case "created":
                if let byte = parser.current, byte == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                    facts.created = JSONValue.number(try parser.parseNumber()).intValue
                } else {
                    facts.created = nil
                    _ = try parser.skipValue()
                }
            case "choices":
                hasChoices = true
                if parser.current == UInt8(ascii: "[") {
                    try parser.scanChoices(into: &facts, payload: &payload)
                } else {
                    facts.hasNoChoices = false
                    _ = try parser.skipValue()
                }
            case "object":
                if parser.current == UInt8(ascii: "\"") {
                    isChunkObject = try parser.parseString(equalTo: "chat.completion.chunk")
                } else {
                    isChunkObject = false
                    _ = try parser.skipValue()
                }
            case "error":
                // Not an envelope member: a chunk that carries an error besides its choices
                // (OpenRouter's mid-stream failures do) is never a keepalive to drop.
                hasError = true
                if !(try parser.skipValue()) { payload = true }
            case "usage":
                topUsage = try parser.valueUnlessNull()
            case "x_groq":
                guard parser.current == UInt8(ascii: "{") else {
                    groqUsage = nil
                    _ = try parser.skipValue()
                    return
                }
                groqUsage = nil
                try parser.distinctMembers { inner, key throws(Failure) in
                    if key.is("usage") {
                        groqUsage = try inner.valueUnlessNull()
                    } else {
                        _ = try inner.skipValue()
                    }
                }
            case "system_fingerprint", "service_tier", "obfuscation", "provider":
                _ = try parser.skipValue()  // envelope: never payload (named here to spare a set lookup)
            default:
                let empty = try parser.skipValue()
                // e.g. Azure's prompt_filter_results: not ours to drop.
                if !empty, !ChunkFacts.envelopeKeys.contains(key.string) { payload = true }
            }
        }
        self.skipWhitespace()
        guard self.index == self.bytes.count else { throw self.failure("unexpected text after the document") }
        facts.usage = topUsage ?? groqUsage
        facts.carriesPayload = payload || facts.carriesContent || facts.usage != nil
        if let id = facts.id, id != envelope.id, Self.isPlainString(id) { envelope.id = id }
        if let model = facts.model, model != envelope.model, Self.isPlainString(model) { envelope.model = model }
        if hasChoices || isChunkObject { return ChunkScanner.Result(kind: .chunk, facts: facts) }
        return ChunkScanner.Result(kind: hasError ? .error : .other, facts: nil)
    }

    /// `choices`: each object choice's finish reason, delta and other members.
    private mutating func scanChoices(into facts: inout ChunkFacts, payload: inout Bool) throws(Failure) {
        let count = try self.elements { parser throws(Failure) in
            if parser.current == UInt8(ascii: "{") {
                try parser.scanChoice(into: &facts, payload: &payload)
            } else {
                _ = try parser.skipValue()
            }
        }
        facts.hasNoChoices = count == 0
    }

    private mutating func scanChoice(into facts: inout ChunkFacts, payload: inout Bool) throws(Failure) {
        try self.distinctMembers { parser, key throws(Failure) in
            switch key {
            case "finish_reason":
                if let reason = try parser.stringUnlessOther() {
                    facts.finishReason = facts.finishReason ?? reason
                    facts.carriesContent = true
                }
            case "index", "native_finish_reason":
                _ = try parser.skipValue()
            case "logprobs":
                if !(try parser.skipValue()) { payload = true }
            case "delta":
                if parser.current == UInt8(ascii: "{") {
                    try parser.scanDelta(into: &facts, payload: &payload)
                } else {
                    _ = try parser.skipValue()
                }
            default:
                let empty = try parser.skipValue()
                if !empty, !ChunkFacts.choiceEnvelopeKeys.contains(key.string) { payload = true }
            }
        }
    }

    private mutating func scanDelta(into facts: inout ChunkFacts, payload: inout Bool) throws(Failure) {
        try self.distinctMembers { parser, key throws(Failure) in
            if key.is("role") {
                if !(try parser.skipValue()) { facts.hasRole = true }
                return
            }
            guard !(try parser.skipValue()) else { return }
            // `content` (in `contentKeys` too) first: the common one, without hashing a name.
            if key.is("content") || ChunkFacts.contentKeys.contains(key.string) {
                facts.carriesContent = true
            } else {
                payload = true
            }
        }
    }

    /// The value, or nil for `null`.
    private mutating func valueUnlessNull() throws(Failure) -> JSONValue? {
        let value = try self.parseValue()
        if case .null = value { return nil }
        return value
    }

    /// The string, or nil (skipping it) for any other value.
    private mutating func stringUnlessOther(sameAs previous: String? = nil) throws(Failure) -> String? {
        if self.current == UInt8(ascii: "\"") { return try self.parseString(sameAs: previous) }
        _ = try self.skipValue()
        return nil
    }

    /// Skips one value and says whether it carries nothing (``JSONValue/isEmptyPayload``).
    mutating func skipValue() throws(Failure) -> Bool {
        guard let byte = self.current else { throw self.failure("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"):
            var empty = true
            try self.distinctMembers { parser, _ throws(Failure) in
                if !(try parser.skipValue()) { empty = false }
            }
            return empty
        case UInt8(ascii: "["):
            var empty = true
            try self.elements { parser throws(Failure) in
                if !(try parser.skipValue()) { empty = false }
            }
            return empty
        case UInt8(ascii: "\""):
            return try self.skipString()
        case UInt8(ascii: "t"):
            try self.expect("true")
            return false
        case UInt8(ascii: "f"):
            try self.expect("false")
            return false
        case UInt8(ascii: "n"):
            try self.expect("null")
            return true
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            _ = try self.parseNumber()
            return false
        default:
            throw self.failure("unexpected character")
        }
    }

    /// Skips a string without decoding it; says whether it is empty. Notes where its text
    /// lies in ``holes`` when they are being recorded.
    mutating func skipString() throws(Failure) -> Bool {
        self.index += 1  // "
        let start = self.index
        while true {
            self.index = self.plainRun(from: self.index).end
            guard let byte = self.current else { break }
            if byte == UInt8(ascii: "\"") {
                self.holes?.append(ChunkTemplate.Hole(start: Int32(truncatingIfNeeded: start), end: Int32(truncatingIfNeeded: self.index)))
                self.index += 1
                return self.index - 1 == start
            }
            if byte == UInt8(ascii: "\\") {
                self.index += 1
                switch self.current {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    self.index += 1
                case UInt8(ascii: "u"):
                    self.index += 1
                    _ = try self.hex4()
                case nil: throw self.failure("unterminated string")
                default: throw self.failure("unknown escape")
                }
                continue
            }
            throw self.failure("control character in a string")
        }
        throw self.failure("unterminated string")
    }

    /// ``members(_:)``, noting in ``sawRepeatedName`` when a name comes twice. Names are
    /// compared as bytes; a name with escapes, or an object with more names than are
    /// remembered, counts as a repeat (the tree then decides, exactly and rarely).
    mutating func distinctMembers(_ body: (inout JSONParser, ScannedKey) throws(Failure) -> Void) throws(Failure) {
        var names = InlineArray<16, UnsafeBufferPointer<UInt8>>(repeating: UnsafeBufferPointer(start: nil, count: 0))
        var count = 0
        try self.members { parser, key throws(Failure) in
            if key.decoded != nil || count == names.count {
                parser.sawRepeatedName = true
            } else if !parser.sawRepeatedName {
                for position in 0..<count where names[position].hasSameBytes(as: key.raw) {
                    parser.sawRepeatedName = true
                }
                names[count] = key.raw
                count += 1
            }
            try body(&parser, key)
        }
    }
}

/// What a stream's chunks before leave for reading the next, kept by whoever reads the
/// stream (``StreamEvent/init(upstream:envelope:)``).
///
/// The `id` and `model` nearly always repeat: the scanner then hands back the same strings
/// without decoding or allocating them again. Most chunks repeat the one before but for
/// the text of a few strings (the content, OpenAI's `obfuscation`): the ``ChunkTemplate``
/// of the latest chunk read in full then answers for them.
public struct ChunkEnvelope: Sendable {
    var id: String?
    var model: String?
    var template = ChunkTemplate()
    public init() {}
}

/// A chunk read in full, kept to read the stream's next chunks by comparison: a chunk whose
/// bytes are the template's but for the text of the strings the scanner skipped (its
/// "holes"), each of them empty where the template's is and only there, has the template's
/// facts.
///
/// Why that holds: the bytes outside the holes are the same, and each hole is a whole
/// string in both (it ends at the first unescaped quote, where the template's next bytes
/// begin), so the scanner would walk the same members and values in the same order; what
/// it reads of a skipped string is whether it is empty (and its escapes valid), which the
/// match checks too. A stream of content chunks then costs a comparison of their bytes (a
/// few hundred instructions) instead of a walk of their JSON (about 5,000).
///
/// Its arrays are kept from one template to the next, so that a new one allocates nothing.
struct ChunkTemplate: Sendable {
    /// Where a skipped string's text lies: from after its opening quote to its closing quote.
    struct Hole: Sendable {
        var start: Int32
        var end: Int32
        var isEmpty: Bool { self.start == self.end }
    }

    /// Larger chunks (a whole tool call, say) are not kept: each stream holds its template.
    static let maximumSize = 2048
    static let maximumHoles = 32

    private(set) var bytes: [UInt8] = []
    /// The holes, in order; filled by the scanner (``ChunkScanner/scan(_:envelope:)``).
    var holes: [Hole] = []
    /// The template's facts, shared by the events of every chunk that matches it; nil when
    /// there is no template.
    private(set) var facts: ChunkFactsStorage?

    /// Drops the template, handing back its holes' array, emptied, for the next one's.
    mutating func forget() -> [Hole] {
        self.facts = nil
        var holes: [Hole] = []
        swap(&holes, &self.holes)
        holes.removeAll(keepingCapacity: true)
        if holes.capacity == 0 { holes.reserveCapacity(16) }  // a chunk has about ten, grown one by one otherwise
        return holes
    }

    /// Makes `bytes`, whose holes the scanner has just noted, the template.
    mutating func keep(_ bytes: UnsafeBufferPointer<UInt8>, facts: ChunkFactsStorage) {
        self.bytes.removeAll(keepingCapacity: true)
        self.bytes.append(contentsOf: bytes)
        self.facts = facts
    }

    /// The template's facts when `other` is the template but for the text of its holes
    /// (see the type's notes).
    func facts(matching other: UnsafeBufferPointer<UInt8>) -> ChunkFactsStorage? {
        guard let facts = self.facts, let otherBase = other.baseAddress else { return nil }
        let matches = self.bytes.withUnsafeBufferPointer { template in
            let base = template.baseAddress!
            var parser = JSONParser(other)
            var from = 0
            for hole in self.holes {
                // The bytes up to and including the hole's opening quote.
                let start = Int(hole.start)
                let count = start - from
                guard parser.index + count <= other.count,
                    memcmp(base + from, otherBase + parser.index, count) == 0
                else { return false }
                parser.index += count - 1
                guard let empty = try? parser.skipString(), empty == hole.isEmpty else { return false }
                parser.index -= 1  // back to the closing quote, where the template's bytes resume
                from = Int(hole.end)
            }
            let rest = template.count - from
            return other.count - parser.index == rest && memcmp(base + from, otherBase + parser.index, rest) == 0
        }
        return matches ? facts : nil
    }
}
