import Foundation
import NIOCore
@testable import RelayCore
import Testing

/// The hand-written JSON parser and writer: what RFC 8259 allows, what it refuses, and the
/// same values as `JSONDecoder` (the reference; the corpus-wide comparison is in
/// RelayGatewayTests' JSONParserCorpusTests).
@Suite("JSON parser and writer")
struct JSONParserTests {
    static func parse(_ text: String) throws -> JSONValue { try JSONValue(parsing: Array(text.utf8)) }
    static func reference(_ text: String) throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }

    @Test("A plain run ends where a byte-at-a-time scan ends: at the first quote, backslash or control character, at every offset and alignment")
    func plainRun() {
        /// The byte-at-a-time reference.
        func reference(_ bytes: [UInt8], from start: Int) -> (end: Int, ascii: Bool) {
            var index = start
            var ascii = true
            while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\"), bytes[index] >= 0x20 {
                if bytes[index] >= 0x80 { ascii = false }
                index += 1
            }
            return (index, ascii)
        }
        let stops: [UInt8] = [UInt8(ascii: "\""), UInt8(ascii: "\\")] + Array(0..<0x20)
        // Bytes next to the stops' values, where a carry or borrow would show.
        let fillers: [UInt8] = [UInt8(ascii: "a"), 0x20, 0x21, 0x23, 0x5B, 0x5D, 0x7F, 0x80, 0xA2, 0xDC, 0xFF]
        var checked = 0
        for length in 0...20 {
            for filler in fillers {
                for stopAt in [nil] + Array(0..<length).map(Optional.some) {
                    for stop in stopAt == nil ? [UInt8(0)] : stops {
                        var bytes = [UInt8](repeating: filler, count: length)
                        if let stopAt {
                            bytes[stopAt] = stop
                            // A second stop after the first must not move the end.
                            if stopAt + 2 < length { bytes[stopAt + 2] = UInt8(ascii: "\"") }
                        }
                        for start in 0...min(3, length) {
                            let found = bytes.withUnsafeBufferPointer { JSONParser($0).plainRun(from: start) }
                            let expected = reference(bytes, from: start)
                            if found.end != expected.end || found.ascii != expected.ascii {
                                Issue.record("\(bytes) from \(start): \(found), expected \(expected)")
                                return
                            }
                            checked += 1
                        }
                    }
                }
            }
        }
        #expect(checked > 50_000)
    }

    @Test("Values of every kind, as JSONDecoder reads them", arguments: [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"},"f":-0.5,"g":1e3,"h":"","i":[],"j":{}}"#,
        #"  [ 1 , 2.25 , -3 , 0 , 1E-2 , 12345678901234567 , 9007199254740993 , 0.1 ]  "#,
        #""Olá, você! 😀 € \u00e9\u0041\n\t\"\\\/""#,
        #"{"nested":{"deeper":[{"x":[[[]]]}]}}"#,
        "123", "-0", "true", "null", #""\ud83d\ude00""#,
    ])
    func matchesTheReference(_ text: String) throws {
        #expect(try Self.parse(text) == Self.reference(text))
    }

    @Test("Refused: what is not JSON", arguments: [
        "", " ", "{", "}", "[1,]", "[,1]", #"{"a":}"#, #"{"a" 1}"#, #"{a:1}"#, "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", "NaN", "Infinity", #""unterminated"#, "\"tab\there\"", #""\x""#, #""\u12""#, "[1] [2]", "{} x",
        "1e400",
    ])
    func refusesInvalid(_ text: String) {
        #expect(throws: (any Error).self) { try Self.parse(text) }
    }

    @Test("Refused: invalid UTF-8 inside a string")
    func refusesInvalidUTF8() {
        let bytes: [UInt8] = [UInt8(ascii: "\""), 0xC3, 0x28, UInt8(ascii: "\"")]
        #expect(throws: (any Error).self) { try JSONValue(parsing: bytes) }
        let escaped: [UInt8] = Array(#""a\n"#.utf8) + [0xFF] + [UInt8(ascii: "\"")]
        #expect(throws: (any Error).self) { try JSONValue(parsing: escaped) }
    }

    @Test("Nesting is limited, so hostile input cannot exhaust the stack")
    func depthLimit() throws {
        let fine = String(repeating: "[", count: 500) + String(repeating: "]", count: 500)
        #expect(throws: Never.self) { try Self.parse(fine) }
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: (any Error).self) { try Self.parse(deep) }
        let deepObjects = String(repeating: #"{"a":"#, count: 600) + "1" + String(repeating: "}", count: 600)
        #expect(throws: (any Error).self) { try Self.parse(deepObjects) }
    }

    @Test("A repeated member: the last one counts, as Python, Go and JavaScript read it (JSONDecoder keeps the first)")
    func duplicateMembers() throws {
        // The policy must see the model the upstream will serve when a client repeats "model".
        #expect(try Self.parse(#"{"model":"allowed","model":"other"}"#) == ["model": "other"])
        let request = try ChatRequest(body: .init(string: #"{"model":"allowed","messages":[{"role":"user","content":"hi"}],"model":"other"}"#))
        #expect(request.model == "other")
    }

    @Test("Lone surrogates become U+FFFD")
    func loneSurrogates() throws {
        #expect(try Self.parse(#""\ud800""#) == "\u{FFFD}")
        #expect(try Self.parse(#""\udc00x""#) == "\u{FFFD}x")
        #expect(try Self.parse(#""\ud800\u0041""#) == "\u{FFFD}A")
    }

    @Test("The writer: compact, keys sorted, integers without a fraction, control characters escaped")
    func writer() throws {
        let value: JSONValue = ["b": [1, .number(2.5), "x/y"], "a": nil, "c": ["t": true, "s": "line\nbreak \u{01} \"q\" \\"]]
        let text = value.serialized()
        #expect(text == #"{"a":null,"b":[1,2.5,"x/y"],"c":{"s":"line\nbreak \u0001 \"q\" \\","t":true}}"#)
        #expect(try Self.parse(text) == value)
        #expect(try Self.reference(text) == value)
        #expect(JSONValue.number(-3).serialized() == "-3")
        #expect(JSONValue.number(1e20).serialized() == "1e+20")
        #expect(JSONValue.number(.infinity).serialized() == "null")
    }

    @Test("Round trip through the writer for every chunk sample")
    func roundTrip() throws {
        for sample in [ChunkSamples.xaiUsage, ChunkSamples.openAIRole, ChunkSamples.azurePromptFilter, ChunkSamples.groqFinishWithUsage,
                       ChunkSamples.avianReasoningDetails, ChunkSamples.xaiToolCall]
        {
            let value = try Self.parse(sample)
            #expect(value == (try Self.reference(sample)))
            #expect(try Self.parse(value.serialized()) == value)
        }
    }
}
