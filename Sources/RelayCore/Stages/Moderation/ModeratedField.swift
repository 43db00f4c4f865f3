/// Which parts of a response the `moderation` stage checks (`output:` in its options).
public struct ModerationOutputFields: Sendable, Equatable {
    /// `content` and `refusal`.
    public var content: Bool
    /// `reasoning_content`, `reasoning` and the text of `reasoning_details`.
    public var reasoning: Bool
    /// Each tool call's `function.arguments`.
    public var toolArguments: Bool

    public init(content: Bool = true, reasoning: Bool = false, toolArguments: Bool = false) {
        self.content = content
        self.reasoning = reasoning
        self.toolArguments = toolArguments
    }

    var isEmpty: Bool { !self.content && !self.reasoning && !self.toolArguments }
}

/// One field of a choice whose text is checked: in a streamed `delta` or a whole `message`.
///
/// Each is a channel of its own (per choice, and per tool call for arguments) with its own
/// held text, because their texts are separate streams that a client joins separately.
enum ModeratedField: Hashable, Sendable {
    case content
    case refusal
    case reasoningContent
    case reasoning
    /// The concatenated `text` (or `summary`) of the `reasoning_details` items (OpenRouter,
    /// Avian); the same words as `reasoning`, so they must be held the same way.
    case reasoningDetails
    case toolArguments(index: Int)

    /// The `where` of a verdict.
    var location: String {
        switch self {
        case .content: "output.content"
        case .refusal: "output.refusal"
        case .reasoningContent, .reasoning, .reasoningDetails: "output.reasoning"
        case .toolArguments: "output.tool_arguments"
        }
    }

    /// The checked fields of `delta` (or `message`) that carry text, in a fixed order.
    static func texts(in delta: [String: JSONValue], fields: ModerationOutputFields) -> [(ModeratedField, String)] {
        var found: [(ModeratedField, String)] = []
        func add(_ field: ModeratedField, _ value: JSONValue?) {
            if let text = value?.stringValue, !text.isEmpty { found.append((field, text)) }
        }
        if fields.content {
            add(.content, delta["content"])
            add(.refusal, delta["refusal"])
        }
        if fields.reasoning {
            add(.reasoningContent, delta["reasoning_content"])
            add(.reasoning, delta["reasoning"])
            if let items = delta["reasoning_details"]?.arrayValue {
                let text = items.compactMap { Self.detailText($0)?.text }.joined()
                if !text.isEmpty { found.append((.reasoningDetails, text)) }
            }
        }
        if fields.toolArguments, let calls = delta["tool_calls"]?.arrayValue {
            for (position, call) in calls.enumerated() {
                let index = call["index"]?.intValue ?? position
                add(.toolArguments(index: index), call["function"]?["arguments"])
            }
        }
        return found
    }

    /// The text member of a `reasoning_details` item: `text` (`reasoning.text`) or `summary`.
    private static func detailText(_ item: JSONValue) -> (key: String, text: String)? {
        if let text = item["text"]?.stringValue { return ("text", text) }
        if let summary = item["summary"]?.stringValue { return ("summary", summary) }
        return nil
    }

    /// Puts `text` in this field of `delta`, replacing what the upstream sent. For
    /// `reasoning_details` the first item with text gets all of it and the others none.
    func set(_ text: String, in delta: inout [String: JSONValue]) {
        switch self {
        case .content: delta["content"] = .string(text)
        case .refusal: delta["refusal"] = .string(text)
        case .reasoningContent: delta["reasoning_content"] = .string(text)
        case .reasoning: delta["reasoning"] = .string(text)
        case .reasoningDetails:
            guard var items = delta["reasoning_details"]?.arrayValue else { return }
            var placed = false
            for position in items.indices {
                guard case .object(var item) = items[position], let (key, _) = Self.detailText(items[position]) else { continue }
                item[key] = .string(placed ? "" : text)
                placed = true
                items[position] = .object(item)
            }
            delta["reasoning_details"] = .array(items)
        case .toolArguments(let index):
            guard var calls = delta["tool_calls"]?.arrayValue else { return }
            for position in calls.indices where (calls[position]["index"]?.intValue ?? position) == index {
                guard case .object(var call) = calls[position], case .object(var function)? = call["function"] else { continue }
                function["arguments"] = .string(text)
                call["function"] = .object(function)
                calls[position] = .object(call)
            }
            delta["tool_calls"] = .array(calls)
        }
    }

    /// A delta carrying only `text` in this field, for a chunk the stage makes to release
    /// held text. `template` is the last `reasoning_details` text item seen on the channel.
    func releaseDelta(_ text: String, template: JSONValue?) -> [String: JSONValue] {
        switch self {
        case .content: return ["content": .string(text)]
        case .refusal: return ["refusal": .string(text)]
        case .reasoningContent: return ["reasoning_content": .string(text)]
        case .reasoning: return ["reasoning": .string(text)]
        case .reasoningDetails:
            var item: [String: JSONValue] = ["type": "reasoning.text"]
            for key in ["type", "format", "index"] { if let value = template?[key] { item[key] = value } }
            item[Self.detailText(template ?? .null)?.key ?? "text"] = .string(text)
            return ["reasoning_details": [.object(item)]]
        case .toolArguments(let index):
            return ["tool_calls": [["index": .number(Double(index)), "function": ["arguments": .string(text)]]]]
        }
    }

    /// The last `reasoning_details` item with text in `delta` (the shape of release chunks).
    static func detailTemplate(in delta: [String: JSONValue]) -> JSONValue? {
        delta["reasoning_details"]?.arrayValue?.last { Self.detailText($0) != nil }
    }
}

/// A channel: one field of one choice.
struct ModerationChannelKey: Hashable, Sendable {
    var choice: Int
    var field: ModeratedField
}
