import Foundation
import HTTPTypes
import NIOCore
import Testing

@testable import RelayCore

@Suite("ChatRequest validation and RelayError bodies")
struct ChatRequestTests {
    private func parse(_ text: String) throws(RelayError) -> ChatRequest {
        try ChatRequest(body: ByteBuffer(string: text))
    }

    private func rejection(_ text: String) -> RelayError? {
        do {
            _ = try self.parse(text)
            return nil
        } catch {
            return error
        }
    }

    private func json(_ buffer: ByteBuffer) throws -> JSONValue {
        try JSONValue(parsing: buffer.readableBytesView)
    }

    static let valid = #"""
        {"model": "grok-4-fast", "stream": true, "stream_options": {"include_usage": true},
         "messages": [{"role": "system", "content": "You are a helpful assistant"}, {"role": "user", "content": "Say hi in Portuguese"}],
         "max_tokens": 4000}
        """#

    @Test("A valid request keeps its bytes and exposes what the relay needs")
    func validRequest() throws {
        let request = try self.parse(Self.valid)
        #expect(request.model == "grok-4-fast")
        #expect(request.stream)
        #expect(request.messages.count == 2)
        #expect(request.messages.first?["role"] == "system")
        #expect(request.clientRequestedStreamUsage)
        #expect(request.json["max_tokens"]?.intValue == 4000)
        #expect(String(buffer: request.body) == Self.valid, "an untouched request goes upstream byte for byte")
    }

    @Test("stream is false when absent or null; usage is not requested without stream_options", arguments: [
        #"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":null}"#,
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#,
    ])
    func streamDefaults(text: String) throws {
        let request = try self.parse(text)
        #expect(!request.stream)
        #expect(!request.clientRequestedStreamUsage)
    }

    @Test("Invalid bodies are 400s with an OpenAI-style code", arguments: [
        ("", "invalid_json"),
        ("{", "invalid_json"),
        ("not json", "invalid_json"),
        (#"[{"model":"m"}]"#, "invalid_json"),
        (#""a string""#, "invalid_json"),
        ("42", "invalid_json"),
        (#"{"messages":[{"role":"user","content":"hi"}]}"#, "missing_model"),
        (#"{"model":"","messages":[{"role":"user","content":"hi"}]}"#, "missing_model"),
        (#"{"model":42,"messages":[{"role":"user","content":"hi"}]}"#, "missing_model"),
        (#"{"model":null,"messages":[{"role":"user","content":"hi"}]}"#, "missing_model"),
        (#"{"model":"m"}"#, "missing_messages"),
        (#"{"model":"m","messages":"hi"}"#, "missing_messages"),
        (#"{"model":"m","messages":{"role":"user"}}"#, "missing_messages"),
        (#"{"model":"m","messages":[]}"#, "empty_messages"),
        (#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":"yes"}"#, "invalid_stream"),
        (#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":1}"#, "invalid_stream"),
    ])
    func invalid(text: String, code: String) throws {
        let error = try #require(self.rejection(text), "accepted \(text.debugDescription)")
        #expect(error.status == .badRequest)
        #expect(error.code == code)
        #expect(error.type == "invalid_request_error")
        #expect(!error.message.isEmpty)
    }

    @Test("setUpstreamModel rewrites model and leaves every other member as it was")
    func setUpstreamModel() throws {
        var request = try self.parse(Self.valid)
        let before = try #require(try self.json(request.body).objectValue)
        request.setUpstreamModel("grok-4-fast-reasoning")
        let after = try #require(try self.json(request.body).objectValue)
        #expect(after["model"] == "grok-4-fast-reasoning")
        #expect(request.json["model"] == "grok-4-fast-reasoning")
        #expect(request.model == "grok-4-fast", "the name the client asked for stays")
        var rest = after
        rest["model"] = before["model"]
        #expect(rest == before)
        #expect(Set(after.keys) == Set(before.keys))
    }

    @Test("setUpstreamModel with the same name leaves the bytes alone")
    func setUpstreamModelSameName() throws {
        var request = try self.parse(Self.valid)
        request.setUpstreamModel("grok-4-fast")
        #expect(String(buffer: request.body) == Self.valid)
    }

    @Test("set(_:to:) adds, replaces and removes members")
    func setMember() throws {
        var request = try self.parse(Self.valid)
        request.set("stream_options", to: ["include_usage": false])
        request.set("max_tokens", to: nil)
        request.set("user", to: "u-1")
        let body = try #require(try self.json(request.body).objectValue)
        #expect(body["stream_options"] == ["include_usage": false])
        #expect(body["max_tokens"] == nil)
        #expect(body["user"] == "u-1")
        #expect(!request.clientRequestedStreamUsage)
    }

    @Test("set(_:to:) edits the body in place: the value replaced, or the member added before the brace; every other byte as the client wrote it")
    func setEditsInPlace() throws {
        // Spacing, key order and number spellings no writer would reproduce.
        let text = "{ \"model\" : \"m\",\n  \"messages\": [ {\"role\":\"user\", \"content\":\"hi\"} ], \"temperature\": 1.50, \"n\": 1e0 }\n"
        var request = try self.parse(text)
        request.setUpstreamModel("grok-4")
        #expect(String(buffer: request.body) == text.replacingOccurrences(of: "\"m\"", with: "\"grok-4\""))
        request.set("stream_options", to: ["include_usage": true])
        let expected = text.replacingOccurrences(of: "\"m\"", with: "\"grok-4\"")
            .replacingOccurrences(of: "1e0 }", with: "1e0 ,\"stream_options\":{\"include_usage\":true}}")
        #expect(String(buffer: request.body) == expected)
        #expect(try self.json(request.body) == .object(request.json), "the bytes and the tree agree")
        #expect(request.clientRequestedStreamUsage)
    }

    @Test("set(_:to:) on a body that names the member twice, or to remove one, writes the tree: one member, the new value", arguments: [
        #"{"model":"a","messages":[{"role":"user","content":"hi"}],"model":"b"}"#,
        #"{"mod\u0065l":"a","messages":[{"role":"user","content":"hi"}],"model":"b"}"#,
    ])
    func setWithRepeatedName(text: String) throws {
        var request = try self.parse(text)
        #expect(request.json["model"] == "b", "the last one counts")
        request.setUpstreamModel("c")
        #expect(try self.json(request.body) == .object(request.json))
        #expect(String(buffer: request.body).components(separatedBy: #""model""#).count == 2, "one model member: \(String(buffer: request.body))")
        request.set("model", to: nil)
        #expect(try self.json(request.body).objectValue?["model"] == nil)
    }

    /// What the request's checks say of `bytes` when its tree is parsed whole, as they did
    /// before the body was checked without one: an error code, or nil when accepted.
    static func codeFromTree(_ bytes: [UInt8]) -> String? {
        guard let document = try? JSONValue(parsing: bytes), case .object(let object) = document else { return "invalid_json" }
        guard let model = object["model"]?.stringValue, !model.isEmpty else { return "missing_model" }
        guard let messages = object["messages"]?.arrayValue else { return "missing_messages" }
        guard !messages.isEmpty else { return "empty_messages" }
        switch object["stream"] {
        case nil, .null?, .bool?: return nil
        default: return "invalid_stream"
        }
    }

    static let message = Array(#""messages":[{"role":"user","content":"hi"}]"#.utf8)
    static func object(_ parts: [UInt8]...) -> [UInt8] { [UInt8(ascii: "{")] + Array(parts.joined()) + [UInt8(ascii: "}")] }
    static func text(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Bodies at the edges of what the parser accepts: the check without a tree must refuse
    /// and accept the same ones, for the same reason, and read the same model and stream.
    static let edgeBodies: [(String, [UInt8])] = [
        ("plain", object(text(#""model":"m","#), message)),
        ("multibyte text and names", object(text(#""model":"Olá","módel":"é","#), message, text(#","x":"日本語 😀""#))),
        ("invalid UTF-8 in a value", object(text(#""model":"m","#), message, text(#","x":""#), [0xC3, 0x28], text(#"""#))),
        ("invalid UTF-8 in a nested name", object(text(#""model":"m","messages":[{""#), [0xFF], text(#"":"user"}]"#))),
        ("invalid UTF-8 in a top-level name", object(text(#""model":"m","#), message, text(#",""#), [0x80], text(#"":1"#))),
        ("an overlong encoding", object(text(#""model":"m","#), message, text(#","x":""#), [0xC0, 0xAF], text(#"""#))),
        ("a surrogate as UTF-8", object(text(#""model":"m","#), message, text(#","x":""#), [0xED, 0xA0, 0x80], text(#"""#))),
        ("a truncated sequence before an escape", object(text(#""model":"m","#), message, text(#","x":"a"#), [0xE6, 0x97], text(#"\n""#))),
        ("a continuation byte after an escape", object(text(#""model":"m","#), message, text(#","x":"\n"#), [0x97], text(#"""#))),
        ("escapes and surrogates, paired and lone", object(text(#""model":"m\u00e1","#), message, text(#","x":"\ud83d\ude00 \ud800 \udc00 \ud800\u0041 \/\b\f\r\t""#))),
        ("a bad escape", object(text(#""model":"m","#), message, text(#","x":"\x""#))),
        ("a short \\u escape", object(text(#""model":"m","#), message, text(#","x":"\u12""#))),
        ("a surrogate then a bad \\u escape", object(text(#""model":"m","#), message, text(#","x":"\ud800\uZZZZ""#))),
        ("a raw tab in a string", object(text(#""model":"m","#), message, text(",\"x\":\"a\tb\""))),
        ("a number out of range", object(text(#""model":"m","#), message, text(#","t":[1e999]"#))),
        ("numbers at the grammar's edges", object(text(#""model":"m","#), message, text(#","t":[-0,0.5e-3,1E+2,-12345678901234567890]"#))),
        ("a number with a leading zero", object(text(#""model":"m","#), message, text(#","t":01"#))),
        ("a number without digits after the point", object(text(#""model":"m","#), message, text(#","t":1."#))),
        ("a literal cut short", object(text(#""model":"m","#), message, text(#","t":tru"#))),
        ("512 levels deep", object(text(#""model":"m","#), message, text(#","t":"#), text(String(repeating: "[", count: 511) + String(repeating: "]", count: 511)))),
        ("513 levels deep", object(text(#""model":"m","#), message, text(#","t":"#), text(String(repeating: "[", count: 512) + String(repeating: "]", count: 512)))),
        ("text after the object", object(text(#""model":"m","#), message) + text(" x")),
        ("whitespace around the object", text(" \n") + object(text(#""model":"m","#), message) + text("\r\n\t ")),
        ("model named twice, the last empty", object(text(#""model":"m","model":"","#), message)),
        ("model named twice, the last a string", object(text(#""model":1,"model":"m","#), message)),
        ("messages named twice, the last empty", object(text(#""model":"m","#), message, text(#","messages":[]"#))),
        ("messages named twice, the last not an array", object(text(#""model":"m","#), message, text(#","messages":{}"#))),
        ("stream named twice, the last a boolean", object(text(#""model":"m","stream":"yes","stream":true,"#), message)),
        ("stream null", object(text(#""model":"m","stream":null,"#), message)),
        ("stream a string", object(text(#""model":"m","stream":"true","#), message)),
        ("stream a number", object(text(#""model":"m","stream":1,"#), message)),
        ("model's name written with an escape", object(text(#""mod\u0065l":"m","#), message)),
        ("model not a string", object(text(#""model":["m"],"#), message)),
        ("an array", text(#"[{"model":"m"}]"#)),
        ("a string", text(#""model""#)),
        ("an unterminated object", text(#"{"model":"m","#) + message),
        ("nothing", []),
        ("only whitespace", text(" \n")),
    ]

    @Test("The body is checked without a tree: refused exactly when the tree's checks refuse it, for the same reason, and read the same", arguments: Self.edgeBodies.indices)
    func checkedAsTheTreeWouldBe(index: Int) throws {
        let (label, bytes) = Self.edgeBodies[index]
        let expected = Self.codeFromTree(bytes)
        switch Result(catching: { () throws(RelayError) in try ChatRequest(body: ByteBuffer(bytes: bytes)) }) {
        case .success(let request):
            #expect(expected == nil, "\(label): accepted, the tree's checks say \(expected ?? "")")
            let tree = try JSONValue(parsing: bytes).objectValue ?? [:]
            #expect(request.model == tree["model"]?.stringValue, "\(label)")
            #expect(request.stream == (tree["stream"]?.boolValue ?? false), "\(label)")
            #expect(request.messages == tree["messages"]?.arrayValue, "\(label)")
            #expect(request.json == tree, "\(label)")
        case .failure(let error):
            #expect(error.code == expected, "\(label): refused with \(error.code ?? "nil"), the tree's checks say \(expected ?? "accept")")
        }
    }

    @Test("member(_:) reads one member as the tree has it; a name given twice counts by its last value")
    func members() throws {
        let request = try self.parse(#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1,"n":2,"o":{"a":[true,null]}}"#)
        #expect(request.member("n") == 2)
        #expect(request.member("o") == ["a": [true, nil]])
        #expect(request.member("absent") == nil)
        #expect(request.member("messages") == request.json["messages"])
        #expect(request.upstreamModel == "m")
    }

    @Test("RelayError.jsonBody is {error:{message,type,code}}")
    func jsonBody() throws {
        let error = RelayError.invalidRequest("You must provide a model parameter.", code: "missing_model")
        let body = try self.json(error.jsonBody)
        #expect(body == ["error": ["message": "You must provide a model parameter.", "type": "invalid_request_error", "code": "missing_model"]])
        #expect(body["error"]?.objectValue?.keys.sorted() == ["code", "message", "type"])
    }

    @Test("A RelayError without a code has code null")
    func jsonBodyWithoutCode() throws {
        let error = RelayError(status: .badGateway, message: "m", type: "upstream_error")
        let body = try self.json(error.jsonBody)
        #expect(body["error"]?["code"] == .null)
        #expect(body["error"]?.objectValue?.keys.sorted() == ["code", "message", "type"])
    }

    @Test("sseEvent is one data event holding the JSON body")
    func sseEvent() throws {
        let error = RelayError.upstreamFailed("Upstream stream is malformed.")
        let frames = try SSEFeed.frames([error.sseEvent])
        #expect(frames.count == 1)
        let data = try #require(frames.first?.data)
        #expect(data == error.jsonBody)
        #expect(StreamEvent(upstream: frames[0]).kind == .error)
    }

    @Test("Statuses of the named errors", arguments: [
        (RelayError.modelNotFound("x"), HTTPResponse.Status.notFound, "model_not_found"),
        (RelayError.bodyTooLarge(limit: 10), .contentTooLarge, "request_too_large"),
        (RelayError.upstreamUnreachable("x"), .badGateway, "upstream_unreachable"),
        (RelayError.upstreamTimeout("x"), .gatewayTimeout, "upstream_timeout"),
        (RelayError.shuttingDown(), .serviceUnavailable, "shutting_down"),
    ])
    func namedErrors(error: RelayError, status: HTTPResponse.Status, code: String) {
        #expect(error.status == status)
        #expect(error.code == code)
    }
}
