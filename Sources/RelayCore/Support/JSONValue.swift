import Foundation

/// A JSON document as a value: what the relay decodes when it needs to look inside a
/// request or an event, without fixing a schema that providers do not keep.
///
/// Equality is by meaning: object key order and number spelling do not matter.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The member `key` of an object, or nil.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var intValue: Int? {
        if case .number(let n) = self, n.isFinite, n == n.rounded(), abs(n) < 9.0e15 { return Int(n) }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// True for what carries nothing: null, "", [], {} and objects or arrays of only those.
    public var isEmptyPayload: Bool {
        switch self {
        case .null: true
        case .string(let s): s.isEmpty
        case .array(let a): a.allSatisfy(\.isEmptyPayload)
        case .object(let o): o.values.allSatisfy(\.isEmptyPayload)
        case .bool, .number: false
        }
    }

    /// Parses a JSON document (RFC 8259; nesting deeper than 512 levels is refused).
    public init(parsing bytes: some Sequence<UInt8>) throws {
        try self.init(parsing: bytes, objectCapacity: 0)
    }

    /// Parses a document whose tree is dropped right after use (a streamed chunk the
    /// moderation stage rewrites): each object's dictionary is made with room for eight
    /// members, as a chunk's have, instead of growing (and rehashing) member by member:
    /// 7% of the moderation pipeline's instructions. Kept trees (a request's) grow as their
    /// members come, so that small objects stay small.
    init(parsingTransient bytes: some Sequence<UInt8>) throws {
        try self.init(parsing: bytes, objectCapacity: 8)
    }

    /// Parses `bytes` in place when they are contiguous (see ``JSONParser/objectCapacity``).
    private init(parsing bytes: some Sequence<UInt8>, objectCapacity: Int) throws {
        if let parsed = try bytes.withContiguousStorageIfAvailable({ buffer in try JSONParser.parse(buffer, objectCapacity: objectCapacity) }) {
            self = parsed
        } else {
            self = try Array(bytes).withUnsafeBufferPointer { buffer in try JSONParser.parse(buffer, objectCapacity: objectCapacity) }
        }
    }

    /// The document serialised compactly, with sorted keys (stable, for logs and tests).
    public func serialized() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        JSONWriter.write(self, into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}

extension JSONValue: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let b = try? container.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? container.decode(Double.self) {
            self = .number(n)
        } else if let s = try? container.decode(String.self) {
            self = .string(s)
        } else if let a = try? container.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let b): try container.encode(b)
        case .number(let n):
            if let i = self.intValue { try container.encode(i) } else { try container.encode(n) }
        case .string(let s): try container.encode(s)
        case .array(let a): try container.encode(a)
        case .object(let o): try container.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(nilLiteral: ()) { self = .null }
}
