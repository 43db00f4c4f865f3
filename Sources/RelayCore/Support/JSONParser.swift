#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// A JSON parser and writer for ``JSONValue``, by hand, for the relay's hot path.
///
/// Every streamed chunk is parsed once to read its facts; with `JSONDecoder` (a `try?` per
/// candidate type for every value) that cost more CPU than relaying the bytes. This one
/// walks the bytes once, builds the value directly, and refuses what RFC 8259 refuses,
/// with a nesting limit so that hostile input cannot exhaust the stack.
struct JSONParser {
    /// Deeper documents are refused (`JSONDecoder` stops at 512 too).
    static let maximumDepth = 512

    struct Failure: Error, CustomStringConvertible {
        var message: String
        var offset: Int
        var description: String { "invalid JSON at byte \(self.offset): \(self.message)" }
    }

    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    var depth = 0
    /// Room made in every object's dictionary before its members are read: 0 (grow as they
    /// come) for trees that are kept, more for a tree dropped soon after (``JSONValue/init(parsingTransient:)``).
    var objectCapacity = 0
    /// Set by ``ChunkScanner``'s walk when an object names a member twice.
    var sawRepeatedName = false
    /// Where the strings skipped without being read lie, when ``ChunkScanner`` asks (for a
    /// ``ChunkTemplate``); nil otherwise.
    var holes: [ChunkTemplate.Hole]?

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// Parses one document that fills `bytes` (whitespace around it allowed).
    static func parse(_ bytes: UnsafeBufferPointer<UInt8>, objectCapacity: Int = 0) throws(Failure) -> JSONValue {
        var parser = JSONParser(bytes)
        parser.objectCapacity = objectCapacity
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.failure("unexpected text after the document") }
        return value
    }

    func failure(_ message: String) -> Failure { Failure(message: message, offset: self.index) }

    var current: UInt8? { self.index < self.bytes.count ? self.bytes[self.index] : nil }

    mutating func skipWhitespace() {
        while self.index < self.bytes.count {
            switch self.bytes[self.index] {
            case 0x20, 0x0A, 0x0D, 0x09: self.index += 1
            default: return
            }
        }
    }

    mutating func parseValue() throws(Failure) -> JSONValue {
        guard let byte = self.current else { throw self.failure("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"): return try self.parseObject()
        case UInt8(ascii: "["): return try self.parseArray()
        case UInt8(ascii: "\""): return .string(try self.parseString())
        case UInt8(ascii: "t"): try self.expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try self.expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try self.expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try self.parseNumber())
        default: throw self.failure("unexpected character")
        }
    }

    mutating func expect(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard self.index + count <= self.bytes.count else { throw self.failure("unexpected end of input") }
        for offset in 0..<count where self.bytes[self.index + offset] != word.utf8Start[offset] {
            throw self.failure("unexpected character")
        }
        self.index += count
    }

    mutating func enter() throws(Failure) {
        self.depth += 1
        guard self.depth <= Self.maximumDepth else { throw self.failure("nested deeper than \(Self.maximumDepth) levels") }
    }

    private mutating func parseObject() throws(Failure) -> JSONValue {
        var members = [String: JSONValue](minimumCapacity: self.objectCapacity)
        try self.members { parser, key throws(Failure) in
            members[try parser.text(of: key)] = try parser.parseValue()
        }
        return .object(members)
    }

    private mutating func parseArray() throws(Failure) -> JSONValue {
        var elements: [JSONValue] = []
        try self.elements { parser throws(Failure) in elements.append(try parser.parseValue()) }
        return .array(elements)
    }

    /// Walks the object at the current position (`{`): `body` gets each member's name and
    /// must consume its value. The one place that knows the object grammar, for the
    /// parser and for ``ChunkScanner``.
    mutating func members(_ body: (inout JSONParser, ScannedKey) throws(Failure) -> Void) throws(Failure) {
        try self.enter()
        self.index += 1  // {
        self.skipWhitespace()
        if self.current == UInt8(ascii: "}") {
            self.index += 1
            self.depth -= 1
            return
        }
        while true {
            guard self.current == UInt8(ascii: "\"") else { throw self.failure("expected a member name") }
            let key = try self.scanKey()
            self.skipWhitespace()
            guard self.current == UInt8(ascii: ":") else { throw self.failure("expected ':'") }
            self.index += 1
            self.skipWhitespace()
            try body(&self, key)
            self.skipWhitespace()
            switch self.current {
            case UInt8(ascii: ","):
                self.index += 1
                self.skipWhitespace()
            case UInt8(ascii: "}"):
                self.index += 1
                self.depth -= 1
                return
            default:
                throw self.failure("expected ',' or '}'")
            }
        }
    }

    /// Walks the array at the current position (`[`): `body` must consume each element.
    /// Returns how many there were.
    @discardableResult
    mutating func elements(_ body: (inout JSONParser) throws(Failure) -> Void) throws(Failure) -> Int {
        try self.enter()
        self.index += 1  // [
        self.skipWhitespace()
        var count = 0
        if self.current == UInt8(ascii: "]") {
            self.index += 1
            self.depth -= 1
            return count
        }
        while true {
            try body(&self)
            count += 1
            self.skipWhitespace()
            switch self.current {
            case UInt8(ascii: ","):
                self.index += 1
                self.skipWhitespace()
            case UInt8(ascii: "]"):
                self.index += 1
                self.depth -= 1
                return count
            default:
                throw self.failure("expected ',' or ']'")
            }
        }
    }

    /// A member name, left in place unless it has escapes: the scanner compares names with
    /// the ones it needs without making a `String` for each.
    private mutating func scanKey() throws(Failure) -> ScannedKey {
        let start = self.index + 1
        let end = self.plainRun(from: start).end
        if end < self.bytes.count, self.bytes[end] == UInt8(ascii: "\"") {
            self.index = end + 1
            return ScannedKey(raw: UnsafeBufferPointer(rebasing: self.bytes[start..<end]), decoded: nil)
        }
        return ScannedKey(raw: UnsafeBufferPointer(start: nil, count: 0), decoded: try self.parseString())
    }

    /// A member name as text, its UTF-8 checked as any string's is.
    private func text(of key: ScannedKey) throws(Failure) -> String {
        if let decoded = key.decoded { return decoded }
        let start = key.raw.baseAddress.map { $0 - self.bytes.baseAddress! } ?? self.index
        return try self.decodeUTF8(start..<(start + key.raw.count))
    }

    /// A string starting at the opening quote. Text without escapes is decoded in one go.
    mutating func parseString() throws(Failure) -> String {
        self.index += 1  // "
        let start = self.index
        let (end, ascii) = self.plainRun(from: start)
        self.index = end
        guard let byte = self.current else { throw self.failure("unterminated string") }
        if byte == UInt8(ascii: "\"") {
            // ASCII needs no validation; `String(validating:)` looked up generic metadata
            // on every call, 5% of a relayed chunk's CPU.
            let text = ascii
                ? String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<end]), as: UTF8.self)
                : try self.decodeUTF8(start..<end)
            self.index += 1
            return text
        }
        if byte == UInt8(ascii: "\\") { return try self.parseEscapedString(from: start) }
        throw self.failure("control character in a string")
    }

    /// Where the run of plain string bytes from `start` ends: the index of the first quote,
    /// backslash or control character (`bytes.count` if none), and whether every byte
    /// before it is ASCII.
    ///
    /// Eight bytes at a time (SWAR): a byte that is zero in `word ^ repeated(c)` is a `c`,
    /// and `(x &- ones) & ~x & highs` marks zero bytes, exactly for the lowest one (a borrow
    /// can only mark bytes above it); `(word &- repeated(0x20)) & ~word & highs` marks bytes
    /// below 0x20 the same way. Member names and most values are plain runs, and a byte at
    /// a time cost about 90 instructions a member name.
    @inline(__always)
    func plainRun(from start: Int) -> (end: Int, ascii: Bool) {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        var index = start
        var high: UInt64 = 0
        if let base = self.bytes.baseAddress {
            while index &+ 8 <= self.bytes.count {
                let word = UInt64(littleEndian: UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self))
                let quote = word ^ (ones &* 0x22)
                let backslash = word ^ (ones &* 0x5C)
                let stops = ((quote &- ones) & ~quote | (backslash &- ones) & ~backslash | (word &- ones &* 0x20) & ~word) & highs
                if stops != 0 {
                    let bitsBefore = stops.trailingZeroBitCount & ~7
                    let highBefore = bitsBefore == 0 ? 0 : word & highs & ((1 << UInt64(bitsBefore)) &- 1)
                    return (index + bitsBefore / 8, (high | highBefore) == 0)
                }
                high |= word & highs
                index &+= 8
            }
        }
        while index < self.bytes.count {
            let byte = self.bytes[index]
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            high |= UInt64(byte & 0x80)
            index += 1
        }
        return (index, high == 0)
    }

    /// The string at the current position; `previous` itself when the string's bytes are
    /// `previous`'s, which must hold no quote, backslash or control character (then the raw
    /// bytes are the whole string, escape-free). A stream's chunks repeat their `id` and
    /// `model`: reading them again cost an allocation and a copy per chunk.
    mutating func parseString(sameAs previous: String?) throws(Failure) -> String {
        if var previous {
            let start = self.index + 1
            let end: Int? = previous.withUTF8 { stored in
                let end = start + stored.count
                guard end < self.bytes.count, self.bytes[end] == UInt8(ascii: "\""),
                    stored.isEmpty || memcmp(self.bytes.baseAddress! + start, stored.baseAddress!, stored.count) == 0
                else { return nil }
                return end
            }
            if let end {
                self.index = end + 1
                return previous
            }
        }
        return try self.parseString()
    }

    /// Whether `text` can stand for itself in ``parseString(sameAs:)``.
    static func isPlainString(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 >= 0x20 }
    }

    /// Reads the string at the current position and says whether it is `text`, without
    /// making a `String` when its bytes are `text`'s (a chunk's `"object"` is 21 bytes,
    /// past the length Swift keeps inline, so comparing a decoded copy cost an allocation
    /// per event).
    mutating func parseString(equalTo text: StaticString) throws(Failure) -> Bool {
        let start = self.index + 1
        let end = start + text.utf8CodeUnitCount
        // `text` has no quote, backslash or control character, so the same bytes followed by
        // a quote are the whole string.
        if end < self.bytes.count, self.bytes[end] == UInt8(ascii: "\""),
            UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: self.bytes[start..<end])).spells(text)
        {
            self.index = end + 1
            return true
        }
        return try self.parseString() == text.description
    }

    private func decodeUTF8(_ range: Range<Int>) throws(Failure) -> String {
        let bytes = UnsafeBufferPointer(rebasing: self.bytes[range])
        // ASCII (member names, nearly always) needs no validation: `String(validating:)`
        // looks generic metadata up on every call (1% of a short request's instructions).
        if bytes.allSatisfy({ $0 < 0x80 }) { return String(decoding: bytes, as: UTF8.self) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw Failure(message: "invalid UTF-8 in a string", offset: range.lowerBound)
        }
        return text
    }

    /// The slow path: a string with escapes, from its first byte at `start`.
    private mutating func parseEscapedString(from start: Int) throws(Failure) -> String {
        var utf8: [UInt8] = []
        utf8.reserveCapacity(self.index - start + 16)
        utf8.append(contentsOf: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]))
        while self.index < self.bytes.count {
            let byte = self.bytes[self.index]
            switch byte {
            case UInt8(ascii: "\""):
                self.index += 1
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    throw Failure(message: "invalid UTF-8 in a string", offset: start)
                }
                return text
            case UInt8(ascii: "\\"):
                self.index += 1
                guard let escape = self.current else { throw self.failure("unterminated string") }
                self.index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escape)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"): try self.appendUnicodeEscape(to: &utf8)
                default: throw self.failure("unknown escape")
                }
            case 0..<0x20:
                throw self.failure("control character in a string")
            default:
                utf8.append(byte)
                self.index += 1
            }
        }
        throw self.failure("unterminated string")
    }

    /// `\uXXXX` (the `\u` already read), with a following low surrogate for a high one. A
    /// lone surrogate becomes U+FFFD, as JSONSerialization does.
    private mutating func appendUnicodeEscape(to utf8: inout [UInt8]) throws(Failure) {
        var scalar = try self.hex4()
        if (0xD800..<0xDC00).contains(scalar) {
            if self.index + 6 <= self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\\"), self.bytes[self.index + 1] == UInt8(ascii: "u") {
                let saved = self.index
                self.index += 2
                let low = try self.hex4()
                if (0xDC00..<0xE000).contains(low) {
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    self.index = saved
                    scalar = 0xFFFD
                }
            } else {
                scalar = 0xFFFD
            }
        } else if (0xDC00..<0xE000).contains(scalar) {
            scalar = 0xFFFD
        }
        utf8.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
    }

    mutating func hex4() throws(Failure) -> UInt32 {
        guard self.index + 4 <= self.bytes.count else { throw self.failure("short \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = self.bytes[self.index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw self.failure("bad \\u escape")
            }
            value = value << 4 | UInt32(digit)
            self.index += 1
        }
        return value
    }

    /// A number by RFC 8259's grammar. Short integers are converted by hand; anything else
    /// goes through the standard library's correctly rounded conversion.
    mutating func parseNumber() throws(Failure) -> Double {
        let start = self.index
        var negative = false
        if self.current == UInt8(ascii: "-") {
            negative = true
            self.index += 1
        }
        var integer: Int64 = 0
        var digits = 0
        guard let first = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            throw self.failure("expected a digit")
        }
        if first == UInt8(ascii: "0") {
            self.index += 1
            digits = 1
        } else {
            while let byte = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
                if digits < 18 { integer = integer * 10 + Int64(byte - UInt8(ascii: "0")) }
                digits += 1
                self.index += 1
            }
        }
        var simple = digits <= 15
        if self.current == UInt8(ascii: ".") {
            simple = false
            self.index += 1
            guard let byte = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
                throw self.failure("expected a digit after '.'")
            }
            while let byte = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { self.index += 1 }
        }
        if self.current == UInt8(ascii: "e") || self.current == UInt8(ascii: "E") {
            simple = false
            self.index += 1
            if self.current == UInt8(ascii: "+") || self.current == UInt8(ascii: "-") { self.index += 1 }
            guard let byte = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else {
                throw self.failure("expected a digit in the exponent")
            }
            while let byte = self.current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { self.index += 1 }
        }
        if simple {
            if negative && integer == 0 { return -0.0 }
            return Double(negative ? -integer : integer)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw Failure(message: "number out of range", offset: start) }
        return value
    }

    // MARK: Checking without building

    /// Walks the value at the current position as ``parseValue()`` would and refuses
    /// exactly what it refuses (the grammar, the depth limit, numbers out of range, UTF-8 in
    /// strings and member names), without building it: a client's request is checked whole
    /// and read in part (``ChatRequest``).
    mutating func checkValue() throws(Failure) {
        guard let byte = self.current else { throw self.failure("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"):
            try self.members { parser, key throws(Failure) in
                try parser.checkName(key)
                try parser.checkValue()
            }
        case UInt8(ascii: "["):
            try self.elements { parser throws(Failure) in try parser.checkValue() }
        case UInt8(ascii: "\""): try self.checkString()
        case UInt8(ascii: "t"): try self.expect("true")
        case UInt8(ascii: "f"): try self.expect("false")
        case UInt8(ascii: "n"): try self.expect("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try self.parseNumber()
        default: throw self.failure("unexpected character")
        }
    }

    /// A member name's UTF-8 checked, as ``text(of:)`` checks it (a name with escapes was
    /// checked when it was decoded).
    func checkName(_ key: ScannedKey) throws(Failure) {
        guard key.decoded == nil, !key.raw.allSatisfy({ $0 < 0x80 }) else { return }
        _ = try self.text(of: key)
    }

    /// Walks the string at the current position as ``parseString()`` would and refuses what
    /// it refuses, without making it. Each run of plain bytes has its UTF-8 checked alone:
    /// an escape always stands for whole characters, so a run that is valid UTF-8 on its
    /// own is valid next to them, and one that is not cannot be mended by them.
    mutating func checkString() throws(Failure) {
        self.index += 1  // "
        while true {
            let start = self.index
            let (end, ascii) = self.plainRun(from: start)
            if !ascii { _ = try self.decodeUTF8(start..<end) }
            self.index = end
            guard let byte = self.current else { throw self.failure("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                self.index += 1
                return
            case UInt8(ascii: "\\"):
                self.index += 1
                guard let escape = self.current else { throw self.failure("unterminated string") }
                self.index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    // A surrogate, paired or not, is accepted (a lone one becomes U+FFFD).
                    _ = try self.hex4()
                default:
                    throw self.failure("unknown escape")
                }
            default:
                throw self.failure("control character in a string")
            }
        }
    }
}

/// A member name as ``JSONParser`` met it: its bytes in the document, or (when it had
/// escapes) its decoded text.
struct ScannedKey {
    let raw: UnsafeBufferPointer<UInt8>
    let decoded: String?

    /// Called for every name a `switch` tries: inlined, and compared in place.
    @inline(__always)
    func `is`(_ name: StaticString) -> Bool {
        if let decoded { return decoded == name.description }
        return UnsafeRawBufferPointer(self.raw).spells(name)
    }

    /// Whether the name is `text`, compared as the tree's `String` keys compare (canonical
    /// equivalence); as bytes when both are ASCII, where that is the same and cheaper.
    func matches(_ text: String) -> Bool {
        if let decoded { return decoded == text }
        if self.raw.allSatisfy({ $0 < 0x80 }), text.utf8.allSatisfy({ $0 < 0x80 }) {
            return self.raw.elementsEqual(text.utf8)
        }
        return String(decoding: self.raw, as: UTF8.self) == text
    }

    /// The name as text (invalid UTF-8 repaired; for comparisons only).
    var string: String { self.decoded ?? String(decoding: self.raw, as: UTF8.self) }

    @inline(__always)
    static func ~= (pattern: StaticString, key: ScannedKey) -> Bool { key.is(pattern) }
}

/// Writes ``JSONValue`` compactly, members in key order, the way the relay's own chunks,
/// logs and tests want it: stable, and without escaping `/`.
enum JSONWriter {
    static func write(_ value: JSONValue, into out: inout [UInt8]) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let flag): out.append(contentsOf: (flag ? "true" : "false").utf8)
        case .number(let number): Self.write(number: number, into: &out)
        case .string(let text): Self.write(string: text, into: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (position, element) in elements.enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                Self.write(element, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (position, key) in members.keys.sorted().enumerated() {
                if position > 0 { out.append(UInt8(ascii: ",")) }
                Self.write(string: key, into: &out)
                out.append(UInt8(ascii: ":"))
                Self.write(members[key]!, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func write(number: Double, into out: inout [UInt8]) {
        guard number.isFinite else {
            out.append(contentsOf: "null".utf8)  // JSON has no infinities; JSONEncoder would throw
            return
        }
        if number == number.rounded(), abs(number) < 9.0e15 {
            out.append(contentsOf: String(Int64(number)).utf8)
        } else {
            out.append(contentsOf: number.description.utf8)
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    static func write(string: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0..<0x20:
                out.append(contentsOf: "\\u00".utf8)
                out.append(Self.hexDigits[Int(byte >> 4)])
                out.append(Self.hexDigits[Int(byte & 0x0F)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
