import NIOCore
import NIOHTTP1
import Testing

@testable import RelayGateway

@Suite("The upstream's HTTP/1.1 response parser")
struct HTTP1ResponseParserTests {
    /// What a parser made of its input, with body parts joined: how the input was split
    /// into reads must not change it.
    struct Outcome: Equatable, CustomStringConvertible {
        var parts: [String] = []
        var failure: String?
        var description: String { "\(self.parts) \(self.failure.map { "failed: \($0)" } ?? "")" }
    }

    /// Feeds `input` in reads cut at `cuts`, then ends the input when `close`.
    static func parse(_ input: String, cuts: [Int] = [], close: Bool = false) -> Outcome {
        let bytes = Array(input.utf8)
        var parser = HTTP1ResponseParser()
        var outcome = Outcome()
        func emit(_ part: HTTP1ResponseParser.Part) {
            switch part {
            case .head(let head):
                let headers = head.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
                outcome.parts.append("head \(head.version.minor) \(head.status.code) \(head.status.reasonPhrase) [\(headers)]")
            case .body(let buffer):
                let text = String(buffer: buffer)
                if let last = outcome.parts.last, last.hasPrefix("body ") {
                    outcome.parts[outcome.parts.count - 1] = last + text
                } else {
                    outcome.parts.append("body " + text)
                }
            case .end(let reusable):
                outcome.parts.append("end \(reusable ? "reusable" : "close")")
            }
        }
        do {
            var start = 0
            for cut in cuts.sorted() + [bytes.count] where cut >= start {
                try parser.feed(ByteBuffer(bytes: bytes[start..<cut]), emit)
                start = cut
            }
            if close { try parser.endOfInput(emit) }
        } catch let failure as HTTP1ResponseParser.Failure {
            outcome.failure = failure.message
        } catch {
            outcome.failure = "\(error)"
        }
        return outcome
    }

    /// The outcome of `input` whole, checked to be the same for every split into two reads
    /// and for one byte a read.
    static func parseEverySplit(_ input: String, close: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) -> Outcome {
        let whole = Self.parse(input, close: close)
        let count = input.utf8.count
        for cut in 0...count {
            let split = Self.parse(input, cuts: [cut], close: close)
            #expect(split == whole, "cut at \(cut)", sourceLocation: sourceLocation)
        }
        let bytewise = Self.parse(input, cuts: Array(0...count), close: close)
        #expect(bytewise == whole, "one byte a read", sourceLocation: sourceLocation)
        return whole
    }

    @Test("a chunked stream: the head, the data without its framing, the end; the connection kept")
    func chunked() {
        let outcome = Self.parseEverySplit(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "9\r\ndata: 1\n\n\r\nA;name=value\r\ndata: 22\n\n\r\n0\r\nX-Trailer: yes\r\n\r\n"
        )
        #expect(outcome.failure == nil)
        #expect(outcome.parts == [
            "head 1 200 OK [Content-Type=text/event-stream,Transfer-Encoding=chunked]",
            "body data: 1\n\ndata: 22\n\n",
            "end reusable",
        ])
    }

    @Test("Content-Length, bare LF line ends, leading blank lines, no reason phrase (NIO names the status)")
    func contentLength() {
        let outcome = Self.parseEverySplit("\r\nHTTP/1.1 429\ncontent-length: 5\nRetry-After:  7 \n\nhello")
        #expect(outcome.parts == ["head 1 429 Too Many Requests [content-length=5,Retry-After=7]", "body hello", "end reusable"])
    }

    @Test("two responses in turn on one connection, an interim 100 skipped")
    func twoResponses() {
        var parser = HTTP1ResponseParser()
        var parts: [HTTP1ResponseParser.Part] = []
        #expect(throws: Never.self) {
            try parser.feed(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab")) { parts.append($0) }
            try parser.feed(ByteBuffer(string: "HTTP/1.1 204 No Content\r\n\r\n")) { parts.append($0) }
        }
        #expect(parts.count == 5)
        guard parts.count == 5 else { return }
        if case .head(let head) = parts[0] { #expect(head.status == .ok) } else { Issue.record("\(parts[0])") }
        #expect(parts[1] == .body(ByteBuffer(string: "ab")))
        #expect(parts[2] == .end(reusable: true))
        if case .head(let head) = parts[3] { #expect(head.status == .noContent) } else { Issue.record("\(parts[3])") }
        #expect(parts[4] == .end(reusable: true))
    }

    @Test("no framing: the body runs to the close, and the connection is not kept")
    func untilClose() {
        let outcome = Self.parseEverySplit("HTTP/1.1 200 OK\r\n\r\ndata: x\n\n", close: true)
        #expect(outcome.parts == ["head 1 200 OK []", "body data: x\n\n", "end close"])
    }

    @Test("the connection is not kept after Connection: close, HTTP/1.0, both framings, or bytes after the end")
    func notReusable() {
        #expect(Self.parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na").parts.last == "end close")
        #expect(Self.parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na").parts.last == "end close")
        #expect(Self.parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\na").parts.last == "end reusable")
        // Transfer-Encoding wins over Content-Length, but such a response is not trusted again.
        let both = Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
        #expect(both.parts.suffix(2) == ["body a", "end close"])
        // The relay never sends a request before the last is answered: anything after the end is wrong.
        let extra = Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\n\r\n")
        #expect(extra.parts == ["head 1 200 OK [Content-Length=1]", "body a", "end close"])
        #expect(extra.failure == nil)
        // Transfer-Encoding that does not end in chunked: to the close.
        let gzip = Self.parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzz", close: true)
        #expect(gzip.parts.suffix(2) == ["body zz", "end close"])
    }

    @Test("what is not HTTP/1.1 is refused with what was wrong", arguments: [
        ("HTTP/2 200 OK\r\n\r\n", "status line"),
        ("HTTP/1.1 20 OK\r\n\r\n", "status line"),
        ("ICY 200 OK\r\n\r\n", "status line"),
        ("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "folded"),
        ("HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n", "name and a value"),
        ("HTTP/1.1 200 OK\r\n: a\r\n\r\n", "name and a value"),
        ("HTTP/1.1 200 OK\r\nX: a\u{1}b\r\n\r\n", "control character"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "hex"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;a\r\n", "hex"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", "too large"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "longer than its size"),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "protocol switch"),
    ])
    func refused(_ input: String, _ mentions: String) {
        let outcome = Self.parse(input)
        #expect(outcome.failure?.contains(mentions) == true, "\(outcome)")
    }

    @Test("a head, chunk line or trailer section without end is refused at its limit, not buffered")
    func limits() {
        let endlessHead = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: HTTP1ResponseParser.maximumHeadSize)
        #expect(Self.parse(endlessHead, cuts: [100, 1000, 30000]).failure?.contains("head larger") == true)
        let endlessLine = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "a", count: HTTP1ResponseParser.maximumLineSize)
        #expect(Self.parse(endlessLine, cuts: [60]).failure?.contains("chunk size line longer") == true)
        let endlessTrailers = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + String(repeating: "X: a\r\n", count: 12_000)
        #expect(Self.parse(endlessTrailers).failure?.contains("trailer section longer") == true)
    }

    @Test("a response cut off by the close is a failure; a close between responses is not")
    func cutOff() {
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", close: true).failure?.contains("closed in the middle") == true)
        #expect(Self.parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab", close: true).failure?.contains("closed in the middle") == true)
        #expect(Self.parse("HTTP/1.1 200 O", close: true).failure?.contains("closed in the middle") == true)
        #expect(Self.parse("", close: true) == Outcome())
        let whole = Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab", close: true)
        #expect(whole.failure == nil)
        #expect(whole.parts.last == "end reusable")
    }

    @Test("the data of one read is one body part")
    func onePartARead() throws {
        var parser = HTTP1ResponseParser()
        var bodies: [ByteBuffer] = []
        try parser.feed(ByteBuffer(string: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n1\r\nf")) {
            if case .body(let buffer) = $0 { bodies.append(buffer) }
        }
        try parser.feed(ByteBuffer(string: "\r\n4\r\nghij\r\n")) { if case .body(let buffer) = $0 { bodies.append(buffer) } }
        #expect(bodies.map { String(buffer: $0) } == ["abcdef", "ghij"])
    }
}

@Suite("The upstream requests' head, as bytes")
struct HTTP1RequestHeadTests {
    @Test("the fixed part once, then each request's Accept and Content-Length")
    func bytes() throws {
        let head = try HTTP1RequestHead(method: .POST, uri: "/v1/chat/completions", headers: ["Host": "api.example", "Authorization": "Bearer k"])
        #expect(String(buffer: head.bytes(accept: "text/event-stream", contentLength: 123)) == """
            POST /v1/chat/completions HTTP/1.1\r
            Host: api.example\r
            Authorization: Bearer k\r
            Accept: text/event-stream\r
            Content-Length: 123\r
            \r

            """)
    }

    @Test("a header that would break the request apart is refused", arguments: [
        ("X-Team", "a\r\nX-Injected: 1"), ("X-Team", "a\nb"), ("X Team", "a"), ("", "a"), ("X-Team", "a\u{0}"),
    ])
    func refused(_ name: String, _ value: String) {
        #expect(throws: HTTP1RequestHead.InvalidField.self) {
            try HTTP1RequestHead(method: .POST, uri: "/v1/chat/completions", headers: HTTPHeaders([(name, value)]))
        }
    }
}
