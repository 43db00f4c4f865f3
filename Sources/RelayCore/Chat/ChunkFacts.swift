/// What one `chat.completion.chunk` carries, read from its JSON once.
///
/// Providers disagree on almost everything (see the corpus's QUIRKS.md): usage in its own
/// `choices: []` chunk, inside the finish chunk, or twice; empty chunks spelled `delta:{}`
/// or `content:"", reasoning:null, reasoning_details:[]`; Azure's `choices: []` filter
/// chunk that is not usage. These facts are the one place that knowledge lives.
public struct ChunkFacts: Sendable, Equatable {
    /// Text, reasoning, a tool call, a refusal, audio or a finish reason: what a client shows.
    public var carriesContent: Bool
    /// Anything beyond an empty envelope: content, usage, logprobs, or a field the relay
    /// does not know to be empty. A chunk without payload is a keepalive in disguise.
    public var carriesPayload: Bool
    /// The delta names a role (the first chunk of a stream usually does).
    public var hasRole: Bool
    /// The first non-null `finish_reason` among the choices.
    public var finishReason: String?
    /// The `usage` object when it is present and not null (top level, or Groq's `x_groq.usage`).
    public var usage: JSONValue?
    /// `choices` is an empty array.
    public var hasNoChoices: Bool
    /// The `model` the upstream reported.
    public var model: String?
    /// The chunk's `id` (providers change it mid-stream, and Azure sends `""`).
    public var id: String?
    /// The chunk's `created` time stamp, when it is a whole number.
    public var created: Int?

    /// Delta members that carry what a client shows.
    static let contentKeys: Set<String> = [
        "content", "reasoning_content", "reasoning", "reasoning_details", "refusal", "tool_calls",
        "function_call", "audio",
    ]
    /// Envelope members that never make a chunk meaningful on their own.
    static let envelopeKeys: Set<String> = [
        "id", "object", "created", "model", "system_fingerprint", "service_tier", "obfuscation", "provider",
        "choices", "usage", "x_groq",
    ]
    /// Choice members besides `delta` that carry nothing on their own.
    static let choiceEnvelopeKeys: Set<String> = ["index", "delta", "finish_reason", "native_finish_reason", "logprobs"]

    /// The facts of a chunk with nothing in it, for ``ChunkScanner`` to fill in.
    init() {
        self.carriesContent = false
        self.carriesPayload = false
        self.hasRole = false
        self.finishReason = nil
        self.usage = nil
        self.hasNoChoices = false
        self.model = nil
        self.id = nil
        self.created = nil
    }

    /// The facts of a chunk already decoded (the relay's own chunks; the reference that
    /// ``ChunkScanner`` is tested against).
    public init(_ chunk: [String: JSONValue]) {
        var carriesContent = false
        var carriesPayload = false
        var hasRole = false
        var finishReason: String?
        let choices = chunk["choices"]?.arrayValue ?? []
        for choice in choices {
            guard case .object(let members) = choice else { continue }
            if let reason = members["finish_reason"]?.stringValue {
                finishReason = finishReason ?? reason
                carriesContent = true
            }
            if let logprobs = members["logprobs"], !logprobs.isEmptyPayload { carriesPayload = true }
            for (key, value) in members where !Self.choiceEnvelopeKeys.contains(key) && !value.isEmptyPayload {
                carriesPayload = true
            }
            guard case .object(let delta)? = members["delta"] else { continue }
            for (key, value) in delta {
                if key == "role" {
                    if !value.isEmptyPayload { hasRole = true }
                    continue
                }
                if value.isEmptyPayload { continue }
                if Self.contentKeys.contains(key) {
                    carriesContent = true
                } else {
                    carriesPayload = true
                }
            }
        }
        var usage: JSONValue?
        if let top = chunk["usage"], top != .null {
            usage = top
        } else if let groq = chunk["x_groq"]?["usage"], groq != .null {
            usage = groq
        }
        for (key, value) in chunk where !Self.envelopeKeys.contains(key) && !value.isEmptyPayload {
            carriesPayload = true  // e.g. Azure's prompt_filter_results: not ours to drop
        }
        self.carriesContent = carriesContent
        self.carriesPayload = carriesPayload || carriesContent || usage != nil
        self.hasRole = hasRole
        self.finishReason = finishReason
        self.usage = usage
        self.hasNoChoices = chunk["choices"]?.arrayValue?.isEmpty ?? false
        self.model = chunk["model"]?.stringValue
        self.id = chunk["id"]?.stringValue
        self.created = chunk["created"]?.intValue
    }
}
