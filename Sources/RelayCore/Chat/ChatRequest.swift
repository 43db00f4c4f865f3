public import NIOCore

/// A validated `POST /v1/chat/completions` body.
///
/// The parsed document is kept next to the original bytes: a request no stage changed is
/// sent upstream as the client wrote it; a stage that rewrites it edits `json` and the
/// bytes are serialised again.
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

    /// Sets a top-level member and re-serialises the body.
    public mutating func set(_ key: String, to value: JSONValue?) {
        self.json[key] = value
        self.body = ByteBuffer(string: JSONValue.object(self.json).serialized())
    }

    /// Names the model the upstream knows (after alias and prefix resolution).
    public mutating func setUpstreamModel(_ name: String) {
        guard name != self.json["model"]?.stringValue else { return }
        self.set("model", to: .string(name))
    }
}
