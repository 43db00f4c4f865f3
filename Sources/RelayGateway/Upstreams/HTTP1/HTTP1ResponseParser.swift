import NIOCore
import NIOHTTP1

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// Reads an upstream's HTTP/1.1 responses from the bytes of its connection: the head, the
/// body with its framing taken off (chunked, `Content-Length`, or to the close), and the
/// end, with whether the connection may carry another request.
///
/// Why not NIO's `HTTPResponseDecoder` (which the relay used before): a streamed chat
/// response is one chunked-encoding chunk per event, and the decoder hands each chunk
/// through llhttp's callbacks, a `ByteToMessageHandler` and the channel pipeline as a boxed
/// `HTTPClientResponsePart` that the next handler casts back: about 3,700 instructions an
/// event, a sixth of what relaying it cost (Benchmarks/README.md, "What changed since: the
/// upstream's HTTP/1.1 read by the relay itself"). Here a chunk costs a size line read and
/// a copy: the data of one read goes on as one buffer, so the SSE decoder sees the read's
/// events side by side.
///
/// What it accepts is what RFC 9112 asks a client to accept, and no more: lines end in
/// CR LF or a bare LF; obsolete line folding, control characters in a header, a
/// `Content-Length` that is not one number, a chunk size that is not hex, and an upgrade
/// the relay did not ask for are refused (``Failure``); so is a head over
/// ``maximumHeadSize`` or a chunk's size line over ``maximumLineSize``. Interim (1xx)
/// responses are skipped. Correct for any split of the input into reads.
struct HTTP1ResponseParser {
    /// What a response is made of, in order: its head, body parts (none for an empty
    /// body), its end.
    enum Part: Equatable {
        case head(HTTPResponseHead)
        case body(ByteBuffer)
        /// The response is over. `reusable`: the connection may carry another request (the
        /// upstream keeps it alive, the body's end was known from its framing, and nothing
        /// followed the response).
        case end(reusable: Bool)
    }

    /// The upstream broke HTTP/1.1: the connection cannot be trusted with anything more.
    struct Failure: Error, Equatable, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }

    /// Heads larger than this are refused (status line, headers and trailers alike).
    static let maximumHeadSize = 64 * 1024
    /// A chunk's size line (with any chunk extensions) longer than this is refused.
    static let maximumLineSize = 4 * 1024

    private enum State: Equatable {
        /// The status line and headers of the next response.
        case head
        /// The size line of the next chunk.
        case chunkSize
        case chunkData(remaining: Int)
        /// The line end after a chunk's data.
        case chunkDataEnd
        /// After the last chunk: trailer lines (skipped), up to an empty line.
        case trailers(size: Int)
        case fixedLength(remaining: Int)
        /// No framing: the body ends when the upstream closes.
        case untilClose
        /// The response ended with the connection unfit for more; what follows is dropped.
        case done
    }

    private var state = State.head
    /// Bytes of a line (or head) that the last read cut off, waiting for the rest.
    private var carry: ByteBuffer?
    /// The current response's end leaves the connection fit for another request.
    private var keepsAlive = false

    /// Reads `input`, handing `emit` every part it completes. The body parts of one call
    /// are one buffer: a slice of `input` when its data is in one piece, else a copy.
    mutating func feed(_ input: ByteBuffer, _ emit: (Part) throws -> Void) throws {
        if self.state == .done { return }
        var buffer: ByteBuffer
        if var carry = self.carry.take() {
            carry.writeImmutableBuffer(input)
            buffer = carry
        } else {
            buffer = input
        }
        var body = BodyGatherer()
        do {
            reading: while buffer.readableBytes > 0 {
                switch self.state {
                case .head:
                    switch try self.readHead(&buffer) {
                    case .incomplete:
                        self.carry = buffer
                        break reading
                    case .interim:
                        continue
                    case .response(let head):
                        try emit(.head(head))
                        if self.state == .head { try self.ended(&buffer, emit) }  // no body
                    }
                case .chunkSize:
                    guard let line = try Self.lineAtFront(buffer, limit: Self.maximumLineSize, what: "chunk size line") else {
                        self.carry = buffer
                        break reading
                    }
                    let size = try buffer.withUnsafeReadableBytes { try Self.chunkSize(UnsafeRawBufferPointer(rebasing: $0[..<line.content])) }
                    buffer.moveReaderIndex(forwardBy: line.whole)
                    self.state = size == 0 ? .trailers(size: 0) : .chunkData(remaining: size)
                case .chunkData(let remaining):
                    let count = min(remaining, buffer.readableBytes)
                    body.append(buffer.readSlice(length: count)!, readableAfter: buffer.readableBytes)
                    self.state = count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - count)
                case .chunkDataEnd:
                    // CR LF, or a bare LF; anything else means the chunk ran past its size.
                    let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)
                    if first == UInt8(ascii: "\r") {
                        guard buffer.readableBytes >= 2 else {
                            self.carry = buffer
                            break reading
                        }
                        guard buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) == UInt8(ascii: "\n") else {
                            throw Failure(message: "a chunk longer than its size")
                        }
                        buffer.moveReaderIndex(forwardBy: 2)
                    } else if first == UInt8(ascii: "\n") {
                        buffer.moveReaderIndex(forwardBy: 1)
                    } else {
                        throw Failure(message: "a chunk longer than its size")
                    }
                    self.state = .chunkSize
                case .trailers(let size):
                    guard let line = try Self.lineAtFront(buffer, limit: Self.maximumHeadSize - size, what: "trailer section") else {
                        self.carry = buffer
                        break reading
                    }
                    buffer.moveReaderIndex(forwardBy: line.whole)
                    if line.content == 0 {
                        if let part = body.take() { try emit(.body(part)) }
                        try self.ended(&buffer, emit)
                    } else {
                        self.state = .trailers(size: size + line.whole)
                    }
                case .fixedLength(let remaining):
                    let count = min(remaining, buffer.readableBytes)
                    body.append(buffer.readSlice(length: count)!, readableAfter: buffer.readableBytes)
                    if count == remaining {
                        if let part = body.take() { try emit(.body(part)) }
                        try self.ended(&buffer, emit)
                    } else {
                        self.state = .fixedLength(remaining: remaining - count)
                    }
                case .untilClose:
                    body.append(buffer.readSlice(length: buffer.readableBytes)!, readableAfter: 0)
                case .done:
                    break reading
                }
            }
        } catch {
            // What came before the fault is handed on first, as it would have been had the
            // fault come in a later read. Nothing after the fault is read.
            self.state = .done
            if let part = body.take() { try emit(.body(part)) }
            throw error
        }
        if let part = body.take() { try emit(.body(part)) }
    }

    /// The connection ended (the upstream closed it): the end of a body that runs to the
    /// close; a failure when a response was cut off.
    mutating func endOfInput(_ emit: (Part) throws -> Void) throws {
        switch self.state {
        case .untilClose:
            self.state = .done
            try emit(.end(reusable: false))
        case .head where self.carry == nil, .done:
            return
        default:
            self.state = .done
            throw Failure(message: "the connection closed in the middle of a response")
        }
    }

    /// The response's body is over: the next response's head follows, unless anything
    /// else in this read (the relay never sends a request before the last one is answered)
    /// makes the connection unfit for more.
    private mutating func ended(_ buffer: inout ByteBuffer, _ emit: (Part) throws -> Void) throws {
        let reusable = self.keepsAlive && buffer.readableBytes == 0
        self.state = reusable ? .head : .done
        if !reusable { buffer.moveReaderIndex(forwardBy: buffer.readableBytes) }
        try emit(.end(reusable: reusable))
    }

    // MARK: The head

    /// What ``readHead(_:)`` found at the front of the bytes.
    private enum HeadRead {
        /// Its end is not here yet.
        case incomplete
        /// A 1xx head, consumed and skipped: the response's own comes after it.
        case interim
        case response(HTTPResponseHead)
    }

    /// The head at the front of `buffer`, consumed unless incomplete. Sets the state for
    /// the body: still `.head` when the response has none.
    private mutating func readHead(_ buffer: inout ByteBuffer) throws -> HeadRead {
        guard let found = Self.headAtFront(buffer) else {
            guard buffer.readableBytes <= Self.maximumHeadSize else {
                throw Failure(message: "a response head larger than \(Self.maximumHeadSize) bytes")
            }
            return .incomplete
        }
        guard found.bodyStart <= Self.maximumHeadSize else {
            throw Failure(message: "a response head larger than \(Self.maximumHeadSize) bytes")
        }
        let head = try buffer.withUnsafeReadableBytes { bytes in
            try Self.parseHead(UnsafeRawBufferPointer(rebasing: bytes[found.start..<found.end]).bindMemory(to: UInt8.self))
        }
        buffer.moveReaderIndex(forwardBy: found.bodyStart)
        let status = head.head.status.code
        if status < 200 {
            guard status != 101 else { throw Failure(message: "a protocol switch the relay did not ask for") }
            return .interim
        }
        self.keepsAlive = head.head.isKeepAlive && !head.isAmbiguous
        switch head.framing {
        case _ where status == 204 || status == 304:
            self.state = .head
        case .chunked:
            self.state = .chunkSize
        case .length(let length):
            self.state = length == 0 ? .head : .fixedLength(remaining: length)
        case .untilClose:
            self.keepsAlive = false
            self.state = .untilClose
        }
        return .response(head.head)
    }

    /// Where the head at the front of `buffer` starts (after any empty lines), where its
    /// last line ends (before the empty line that closes it) and where the body starts, as
    /// offsets from the reader index; nil when its end is not here yet.
    private static func headAtFront(_ buffer: ByteBuffer) -> (start: Int, end: Int, bodyStart: Int)? {
        buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress else { return nil }
            // Empty lines before a status line are allowed (RFC 9112, 2.2).
            var start = 0
            while start < bytes.count, bytes[start] == UInt8(ascii: "\r") || bytes[start] == UInt8(ascii: "\n") { start += 1 }
            var index = start
            while index < bytes.count, let found = memchr(base + index, Int32(UInt8(ascii: "\n")), bytes.count - index) {
                let newline = base.distance(to: UnsafeRawPointer(found))
                // An empty line: LF, or CR LF, right after the previous line's LF.
                var next = newline + 1
                if next < bytes.count, bytes[next] == UInt8(ascii: "\r") { next += 1 }
                guard next < bytes.count else { return nil }
                if bytes[next] == UInt8(ascii: "\n") { return (start, newline + 1, next + 1) }
                index = newline + 1
            }
            return nil
        }
    }

    private enum Framing: Equatable {
        case chunked
        case length(Int)
        case untilClose
    }

    /// Status line and header lines, each ending in LF (CR LF or bare).
    private static func parseHead(_ bytes: UnsafeBufferPointer<UInt8>) throws -> (head: HTTPResponseHead, framing: Framing, isAmbiguous: Bool) {
        var lines = LineReader(bytes)
        guard let statusLine = lines.next() else { throw Failure(message: "an empty response head") }
        let (version, status) = try Self.parseStatusLine(statusLine)
        var headers: [(String, String)] = []
        headers.reserveCapacity(16)
        var chunked = false
        var transferEncoding = false
        var length: Int?
        while let line = lines.next() {
            guard let first = line.first else { break }
            guard first != UInt8(ascii: " "), first != UInt8(ascii: "\t") else { throw Failure(message: "a folded header line") }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > line.startIndex,
                line[line.startIndex..<colon].allSatisfy(HTTP1Grammar.isTokenByte)
            else { throw Failure(message: "a header line that is not a name and a value") }
            let value = Self.trimmed(line[(colon + 1)...])
            guard value.allSatisfy(HTTP1Grammar.isFieldValueByte) else {
                throw Failure(message: "a control character in a header value")
            }
            let name = line[line.startIndex..<colon]
            if Self.equalsIgnoringCase(name, "transfer-encoding") {
                transferEncoding = true
                // The last coding decides: chunked, or a body that runs to the close.
                let last = value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).last ?? value
                chunked = Self.equalsIgnoringCase(Self.trimmed(last), "chunked")
            } else if Self.equalsIgnoringCase(name, "content-length") {
                for item in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                    let digits = Self.trimmed(item)
                    guard !digits.isEmpty, digits.count <= 18,
                        digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
                    else { throw Failure(message: "a Content-Length that is not one number") }
                    let number = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
                    guard length == nil || length == number else { throw Failure(message: "a Content-Length that is not one number") }
                    length = number
                }
            }
            let text = String(decoding: value, as: UTF8.self)
            headers.append((String(decoding: name, as: UTF8.self), text))
        }
        let framing: Framing = transferEncoding ? (chunked ? .chunked : .untilClose) : length.map { .length($0) } ?? .untilClose
        let head = HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers))
        // Both framings named: the length is ignored, and the connection not trusted again.
        return (head, framing, transferEncoding && length != nil)
    }

    /// `HTTP/1.1 200 OK`: the version (1.0 or 1.1) and the status with its reason.
    private static func parseStatusLine(_ line: UnsafeBufferPointer<UInt8>) throws -> (HTTPVersion, HTTPResponseStatus) {
        let prefix = Array("HTTP/1.".utf8)
        guard line.count >= 12, line.starts(with: prefix),
            line[7] == UInt8(ascii: "0") || line[7] == UInt8(ascii: "1"), line[8] == UInt8(ascii: " "),
            line[9...11].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            line.count == 12 || line[12] == UInt8(ascii: " ")
        else { throw Failure(message: "a status line that is not HTTP/1.x") }
        let code = line[9...11].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        let reason = line.count > 13 ? String(decoding: line[13...], as: UTF8.self) : ""
        let version = line[7] == UInt8(ascii: "1") ? HTTPVersion.http1_1 : .http1_0
        return (version, HTTPResponseStatus(statusCode: code, reasonPhrase: reason))
    }

    private static func equalsIgnoringCase(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        var index = 0
        for byte in bytes {
            // ASCII letters differ from their capitals in bit 5 only; other bytes must match.
            let expected = lowercase.utf8Start[index]
            guard byte == expected || (byte | 0x20 == expected && expected >= UInt8(ascii: "a") && expected <= UInt8(ascii: "z")) else {
                return false
            }
            index += 1
        }
        return true
    }

    /// Without spaces and tabs at either end.
    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Slice<UnsafeBufferPointer<UInt8>> {
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return bytes[start..<end]
    }

    // MARK: Lines in the body

    /// The line at the front of `buffer`: its length without its line end (`content`) and
    /// with it (`whole`); nil when its end is not here yet. Refused when it runs past
    /// `limit` bytes before its end.
    private static func lineAtFront(_ buffer: ByteBuffer, limit: Int, what: StaticString) throws -> (content: Int, whole: Int)? {
        let line = buffer.withUnsafeReadableBytes { bytes -> (content: Int, whole: Int)? in
            guard let base = bytes.baseAddress, let found = memchr(base, Int32(UInt8(ascii: "\n")), bytes.count) else { return nil }
            let newline = base.distance(to: UnsafeRawPointer(found))
            let content = newline > 0 && bytes[newline - 1] == UInt8(ascii: "\r") ? newline - 1 : newline
            return (content, newline + 1)
        }
        guard (line?.content ?? buffer.readableBytes) <= limit else { throw Failure(message: "a \(what) longer than \(limit) bytes") }
        return line
    }

    /// A chunk's size: hex digits, then any chunk extensions (`;name=value`), which are skipped.
    private static func chunkSize(_ line: UnsafeRawBufferPointer) throws -> Int {
        var size = 0
        var digits = 0
        for byte in line {
            let value: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A") + 10)
            case UInt8(ascii: ";"), UInt8(ascii: " "), UInt8(ascii: "\t"):
                guard digits > 0 else { throw Failure(message: "a chunk size that is not a hex number") }
                return size
            default:
                throw Failure(message: "a chunk size that is not a hex number")
            }
            guard size < 1 << 56 else { throw Failure(message: "a chunk size too large") }
            size = size << 4 | value
            digits += 1
        }
        guard digits > 0 else { throw Failure(message: "a chunk size that is not a hex number") }
        return size
    }
}

/// The body data of one read, as one buffer: the first piece as it came, later pieces
/// copied after it (a read of a burst of events holds many chunks).
private struct BodyGatherer {
    private var gathered: ByteBuffer?

    /// `readableAfter`: what is left of the read after `piece`, at most what may follow it.
    mutating func append(_ piece: ByteBuffer, readableAfter: Int) {
        guard piece.readableBytes > 0 else { return }
        guard var gathered = self.gathered.take() else {
            self.gathered = piece
            return
        }
        if gathered.writableBytes < piece.readableBytes {
            // The first piece is a slice of the read: copy it into a buffer with room for the rest.
            var merged = ByteBufferAllocator().buffer(capacity: gathered.readableBytes + piece.readableBytes + readableAfter)
            merged.writeImmutableBuffer(gathered)
            gathered = merged
        }
        gathered.writeImmutableBuffer(piece)
        self.gathered = gathered
    }

    mutating func take() -> ByteBuffer? { self.gathered.take() }
}

/// The lines of a head, each without its line end (LF, or CR LF).
private struct LineReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func next() -> UnsafeBufferPointer<UInt8>? {
        guard self.index < self.bytes.count else { return nil }
        let start = self.index
        let newline = self.bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? self.bytes.count
        self.index = newline + 1
        var end = newline
        if end > start, self.bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return UnsafeBufferPointer(rebasing: self.bytes[start..<end])
    }
}
