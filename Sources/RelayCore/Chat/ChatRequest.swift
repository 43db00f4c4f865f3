public import NIOCore

/// A validated `POST /v1/chat/completions` body.
///
/// The parsed document is kept next to the original bytes: a request no stage changed is
/// sent upstream as the client wrote it; a stage that sets a member edits both, and the
/// rest of the bytes stay as the client wrote them.
public struct ChatRequest: Sendable {
    /// The model name as the client asked for it.
    public var model: String
    /// Whether the client asked for a stream of events.
    public var stream: Bool
    /// The whole body as a JSON object.
    public private(set) var json: [String: JSONValue]
    /// The body to send upstream.
    public private(set) var body: ByteBuffer

    /// Validates a client's body: a JSON object with a string `model` and a non-empty
    /// `messages` array; `stream`, when present, a boolean.
    public init(body: ByteBuffer) throws(RelayError) {
        let document: JSONValue
        do {
            document = try JSONValue(parsing: body.readableBytesView)
        } catch {
            throw .invalidRequest("The request body is not valid JSON.", code: "invalid_json")
        }
        guard case .object(let object) = document else {
            throw .invalidRequest("The request body must be a JSON object.", code: "invalid_json")
        }
        guard let model = object["model"]?.stringValue, !model.isEmpty else {
            throw .invalidRequest("You must provide a model parameter.", code: "missing_model")
        }
        guard let messages = object["messages"]?.arrayValue else {
            throw .invalidRequest("'messages' is a required property and must be an array.", code: "missing_messages")
        }
        guard !messages.isEmpty else {
            throw .invalidRequest("'messages' must contain at least one message.", code: "empty_messages")
        }
        let stream: Bool
        switch object["stream"] {
        case nil, .null?: stream = false
        case .bool(let b)?: stream = b
        default: throw .invalidRequest("'stream' must be a boolean.", code: "invalid_stream")
        }
        self.model = model
        self.stream = stream
        self.json = object
        self.body = body
    }

    /// The `messages` array.
    public var messages: [JSONValue] { self.json["messages"]?.arrayValue ?? [] }

    /// Whether the client asked for usage on its stream (`stream_options.include_usage`).
    public var clientRequestedStreamUsage: Bool {
        self.json["stream_options"]?["include_usage"]?.boolValue ?? false
    }

    /// Sets a top-level member, in `json` and in the body.
    ///
    /// The body's bytes are edited where the member is: its value replaced, or the member
    /// added before the closing brace. The rest goes upstream as the client wrote it, and
    /// nothing is serialised again (writing the tree back sorted every object's keys: 3% of
    /// a one-chunk request's instructions, for the `stream_options` the usage stage adds).
    /// A removal, or a body that names the member twice, is written from the tree.
    public mutating func set(_ key: String, to value: JSONValue?) {
        self.json[key] = value
        if let value, let edited = Self.edited(self.body, setting: key, to: value) {
            self.body = edited
        } else {
            self.body = ByteBuffer(string: JSONValue.object(self.json).serialized())
        }
    }

    /// `body` (a valid JSON object) with the top-level member `key` set to `value`: the
    /// value's bytes replaced, or `,"key":value` put before the closing brace. Nil when
    /// `key` is there more than once.
    private static func edited(_ body: ByteBuffer, setting key: String, to value: JSONValue) -> ByteBuffer? {
        let found = body.withUnsafeReadableBytes { raw in
            raw.withMemoryRebound(to: UInt8.self) { bytes in Self.topLevelMember(key, in: bytes) }
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
        guard name != self.json["model"]?.stringValue else { return }
        self.set("model", to: .string(name))
    }
}
