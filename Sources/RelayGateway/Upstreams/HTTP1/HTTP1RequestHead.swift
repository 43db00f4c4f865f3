import NIOCore
import NIOHTTP1

/// The head of the requests the relay sends an upstream, as the bytes that go on the wire.
///
/// Made once per upstream from everything that does not change (method, path, `Host`, the
/// key and the configured headers), checked then; a request adds its `Accept` and
/// `Content-Length`. The connection writes it and the body as they are: NIO's
/// `HTTPRequestEncoder`, used before, wrapped each of a request's three parts for the
/// pipeline and wrote the head anew every time.
struct HTTP1RequestHead: Sendable {
    /// The request line and fixed headers, each line ended.
    private let fixed: ByteBuffer

    /// Why a name or value cannot go on the wire (a line break would start a header or a
    /// request of its own), for the first field that cannot.
    struct InvalidField: Error, CustomStringConvertible {
        var name: String
        var description: String { "the header '\(self.name)' has a name or value that HTTP/1.1 cannot carry" }
    }

    /// `headers` must not name `Accept` or `Content-Length`: each request sets those.
    init(method: HTTPMethod, uri: String, headers: HTTPHeaders) throws(InvalidField) {
        var fixed = ByteBuffer()
        fixed.writeString("\(method.rawValue) \(uri) HTTP/1.1\r\n")
        for (name, value) in headers {
            guard Self.isValid(name: name), Self.isValid(value: value) else { throw InvalidField(name: name) }
            fixed.writeString(name)
            fixed.writeStaticString(": ")
            fixed.writeString(value)
            fixed.writeStaticString("\r\n")
        }
        guard !uri.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { throw InvalidField(name: "request target") }
        self.fixed = fixed
    }

    /// The head of one request whose body has `contentLength` bytes.
    func bytes(accept: StaticString, contentLength: Int) -> ByteBuffer {
        var head = ByteBuffer()
        head.reserveCapacity(self.fixed.readableBytes + 64)
        head.writeImmutableBuffer(self.fixed)
        head.writeStaticString("Accept: ")
        head.writeStaticString(accept)
        head.writeStaticString("\r\nContent-Length: ")
        head.writeString(String(contentLength))
        head.writeStaticString("\r\n\r\n")
        return head
    }

    static func isValid(name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy(HTTP1Grammar.isTokenByte)
    }

    static func isValid(value: String) -> Bool {
        value.utf8.allSatisfy(HTTP1Grammar.isFieldValueByte)
    }
}
