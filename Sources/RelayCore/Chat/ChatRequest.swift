public import NIOCore

/// A validated `POST /v1/chat/completions` body.
///
/// The body's bytes are what the request is: a request no stage changed is sent upstream
/// as the client wrote it; a stage that sets a member edits the bytes where the member is,
/// and the rest stays as the client wrote it.
///
/// The body is checked whole when the request is made (it must be JSON that the parser
/// accepts) but not built into a tree: the relay reads a member or two (the default
/// pipeline only `stream_options`), and a tree of every message, made for every request,
/// cost about 17,000 instructions of a short one and grows with its text. Members are
/// parsed alone when asked for (``member(_:)``); ``json`` parses the whole body.
public struct ChatRequest: Sendable {
    /// The model name as the client asked for it.
    public var model: String
    /// Whether the client asked for a stream of events.
    public var stream: Bool
    /// The model the body names: the client's, until a stage renames it
    /// (``setUpstreamModel(_:)``).
    public private(set) var upstreamModel: String?
    /// The body to send upstream.
    public private(set) var body: ByteBuffer

    /// Validates a client's body: a JSON object with a string `model` and a non-empty
    /// `messages` array; `stream`, when present, a boolean. A member named twice counts
    /// by its last value, as in a parsed tree.
    public init(body: ByteBuffer) throws(RelayError) {
        let checked: Checked?
        do {
            checked = try body.withUnsafeReadableBytes { raw in
                try Self.check(raw.assumingMemoryBound(to: UInt8.self))
            }
        } catch {
            throw .invalidRequest("The request body is not valid JSON.", code: "invalid_json")
        }
        guard let checked else {
            throw .invalidRequest("The request body must be a JSON object.", code: "invalid_json")
        }
        guard let model = checked.model, !model.isEmpty else {
            throw .invalidRequest("You must provide a model parameter.", code: "missing_model")
        }
        guard let messageCount = checked.messageCount else {
            throw .invalidRequest("'messages' is a required property and must be an array.", code: "missing_messages")
        }
        guard messageCount > 0 else {
            throw .invalidRequest("'messages' must contain at least one message.", code: "empty_messages")
        }
        guard let stream = checked.stream else {
            throw .invalidRequest("'stream' must be a boolean.", code: "invalid_stream")
        }
        self.model = model
        self.stream = stream
        self.upstreamModel = model
        self.body = body
    }

    /// What the check of a body found, for the members the request needs (the last of
    /// each name).
    private struct Checked {
        /// Nil when absent or not a string.
        var model: String?
        /// Nil when absent or not an array.
        var messageCount: Int?
        /// Nil when present and neither a boolean nor null.
        var stream: Bool? = false
    }

    /// Checks `bytes` as the JSON parser would parse them, reading `model`, `messages` and
    /// `stream` on the way; nil for a document that is not an object.
    private static func check(_ bytes: UnsafeBufferPointer<UInt8>) throws(JSONParser.Failure) -> Checked? {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        var checked: Checked?
        if parser.current == UInt8(ascii: "{") {
            var found = Checked()
            // Names compared as bytes: no other spelling of these ASCII names is canonically
            // equivalent to them (as `String` keys would compare), and a name with escapes
            // is compared decoded.
            try parser.members { parser, name throws(JSONParser.Failure) in
                try parser.checkName(name)
                switch name {
                case "model":
                    if parser.current == UInt8(ascii: "\"") {
                        found.model = try parser.parseString()
                    } else {
                        found.model = nil
                        try parser.checkValue()
                    }
                case "messages":
                    if parser.current == UInt8(ascii: "[") {
                        found.messageCount = try parser.elements { parser throws(JSONParser.Failure) in try parser.checkValue() }
                    } else {
                        found.messageCount = nil
                        try parser.checkValue()
                    }
                case "stream":
                    switch parser.current {
                    case UInt8(ascii: "t"): found.stream = true
                    case UInt8(ascii: "f"): found.stream = false
                    case UInt8(ascii: "n"): found.stream = false
                    default: found.stream = nil
                    }
                    try parser.checkValue()
                default:
                    try parser.checkValue()
                }
            }
            checked = found
        } else {
            try parser.checkValue()
        }
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.failure("unexpected text after the document") }
        return checked
    }

    /// The whole body as a JSON object, parsed anew: for stages that read much of it.
    public var json: [String: JSONValue] {
        let tree = self.body.withUnsafeReadableBytes { raw in try? JSONParser.parse(raw.assumingMemoryBound(to: UInt8.self)) }
        return tree?.objectValue ?? [:]
    }

    /// The top-level member `key`, parsed alone; nil when the body has none.
    public func member(_ key: String) -> JSONValue? {
        let value: JSONValue?? = self.body.withUnsafeReadableBytes { raw in
            let bytes = raw.assumingMemoryBound(to: UInt8.self)
            // Nil when the name comes twice: the tree says which value counts.
            guard let found = Self.topLevelMember(key, in: bytes) else { return nil }
            guard let range = found.value else { return .some(nil) }
            return .some(try? JSONParser.parse(UnsafeBufferPointer(rebasing: bytes[range])))
        }
        return value ?? self.json[key]
    }

    /// The `messages` array.
    public var messages: [JSONValue] { self.member("messages")?.arrayValue ?? [] }

    /// Whether the client asked for usage on its stream (`stream_options.include_usage`).
    public var clientRequestedStreamUsage: Bool {
        self.member("stream_options")?["include_usage"]?.boolValue ?? false
    }

    /// Sets a top-level member in the body.
    ///
    /// The body's bytes are edited where the member is: its value replaced, or the member
    /// added before the closing brace. The rest goes upstream as the client wrote it, and
    /// nothing is serialised again (writing the tree back sorted every object's keys: 3% of
    /// a one-chunk request's instructions, for the `stream_options` the usage stage adds).
    /// A removal, or a body that names the member twice, is written from the tree.
    public mutating func set(_ key: String, to value: JSONValue?) {
        if let value, let edited = Self.edited(self.body, setting: key, to: value) {
            self.body = edited
        } else {
            var object = self.json
            object[key] = value
            self.body = ByteBuffer(string: JSONValue.object(object).serialized())
        }
        if key == "model" { self.upstreamModel = value?.stringValue }
    }

    /// `body` (a valid JSON object) with the top-level member `key` set to `value`: the
    /// value's bytes replaced, or `,"key":value` put before the closing brace. Nil when
    /// `key` is there more than once.
    private static func edited(_ body: ByteBuffer, setting key: String, to value: JSONValue) -> ByteBuffer? {
        let found = body.withUnsafeReadableBytes { raw in
            Self.topLevelMember(key, in: raw.assumingMemoryBound(to: UInt8.self))
        }
        guard let (valueRange, closingBrace) = found else { return nil }
        var inserted: [UInt8] = []
        if valueRange == nil {
            inserted.append(UInt8(ascii: ","))
            JSONWriter.write(string: key, into: &inserted)
            inserted.append(UInt8(ascii: ":"))
        }
        JSONWriter.write(value, into: &inserted)
        let cut = valueRange ?? closingBrace..<closingBrace
        let view = body.readableBytesView
        var edited = ByteBufferAllocator().buffer(capacity: body.readableBytes + inserted.count)
        edited.writeBytes(view[view.startIndex..<(view.startIndex + cut.lowerBound)])
        edited.writeBytes(inserted)
        edited.writeBytes(view[(view.startIndex + cut.upperBound)...])
        return edited
    }

    /// Where the top-level member `key` has its value (nil if absent), and where the object
    /// closes; nil when `key` is there twice or the bytes are not one object with members.
    private static func topLevelMember(_ key: String, in bytes: UnsafeBufferPointer<UInt8>) -> (value: Range<Int>?, closingBrace: Int)? {
        var parser = JSONParser(bytes)
        parser.skipWhitespace()
        guard parser.current == UInt8(ascii: "{") else { return nil }
        var value: Range<Int>?
        var repeated = false
        var members = 0
        do {
            try parser.members { parser, name throws(JSONParser.Failure) in
                members += 1
                let start = parser.index
                _ = try parser.skipValue()
                guard name.matches(key) else { return }
                if value != nil { repeated = true }
                value = start..<parser.index
            }
        } catch {
            return nil
        }
        // `members` leaves the index just after the closing brace.
        guard !repeated, members > 0 else { return nil }
        return (value, parser.index - 1)
    }

    /// Names the model the upstream knows (after alias and prefix resolution).
    public mutating func setUpstreamModel(_ name: String) {
        guard name != self.upstreamModel else { return }
        self.set("model", to: .string(name))
    }
}
