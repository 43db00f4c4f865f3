#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Splits a response body into lines, across reads, without copying complete lines.
///
/// Only the tail of a read that does not end in a newline is kept until the next read.
/// Shared by `bench-load` and `bench-soak`.
public struct SSELineScanner {
    private var partialLine: [UInt8] = []

    public init() {}

    /// Calls `onLine` with each complete line of `buffer` (without `\n` or `\r\n`).
    public mutating func scan(_ buffer: ByteBuffer, onLine: (UnsafeRawBufferPointer) -> Void) {
        buffer.withUnsafeReadableBytes { bytes in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return }
            var start = 0
            while start < bytes.count,
                let found = memchr(base + start, Int32(UInt8(ascii: "\n")), bytes.count - start)
            {
                let end = base.distance(to: UnsafeRawPointer(found))
                let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
                if self.partialLine.isEmpty {
                    onLine(Self.droppingCarriageReturn(piece))
                } else {
                    self.partialLine.append(contentsOf: piece)
                    self.partialLine.withUnsafeBytes { onLine(Self.droppingCarriageReturn($0)) }
                    self.partialLine.removeAll(keepingCapacity: true)
                }
                start = end + 1
            }
            if start < bytes.count {
                self.partialLine.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...]))
            }
        }
    }

    private static func droppingCarriageReturn(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard let last = line.last, last == UInt8(ascii: "\r") else { return line }
        return UnsafeRawBufferPointer(rebasing: line.dropLast())
    }
}

/// What one SSE line means to the benchmark.
///
/// OpenAI-style streams put each event on one `data:` line, so a data line is counted as an
/// event. Content is text the client would show: a `"content":"` with at least one character,
/// which leaves out the role chunk's empty content, empty `delta:{}` chunks, finish and usage.
public enum SSELine: Equatable {
    case data(carriesContent: Bool, isDone: Bool)
    case comment
    case other

    private static let dataPrefix = Array("data:".utf8)
    private static let contentKey = Array(#""content":"#.utf8)
    private static let done = Array("[DONE]".utf8)

    public init(_ line: UnsafeRawBufferPointer) {
        if line.first == UInt8(ascii: ":") {
            self = .comment
            return
        }
        guard line.count >= Self.dataPrefix.count, line.starts(with: Self.dataPrefix) else {
            self = .other
            return
        }
        var payload = line.dropFirst(Self.dataPrefix.count)
        if payload.first == UInt8(ascii: " ") { payload = payload.dropFirst() }
        if payload.elementsEqual(Self.done) {
            self = .data(carriesContent: false, isDone: true)
            return
        }
        self = .data(carriesContent: Self.carriesContent(UnsafeRawBufferPointer(rebasing: payload)), isDone: false)
    }

    private static func carriesContent(_ json: UnsafeRawBufferPointer) -> Bool {
        guard var index = Self.firstIndex(of: contentKey, in: json) else { return false }
        index += contentKey.count
        while index < json.count, json[index] == UInt8(ascii: " ") { index += 1 }
        // A string of at least one character; `null` and `""` are not content.
        return index + 1 < json.count && json[index] == UInt8(ascii: "\"") && json[index + 1] != UInt8(ascii: "\"")
    }

    /// Where `needle` starts in `haystack`: memchr finds each candidate first byte, memcmp the rest
    /// (glibc's memmem is a GNU extension that Swift's Glibc module does not show).
    private static func firstIndex(of needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int? {
        guard let base = haystack.baseAddress, let first = needle.first, haystack.count >= needle.count else { return nil }
        let lastStart = haystack.count - needle.count
        var start = 0
        while start <= lastStart, let found = memchr(base + start, Int32(first), lastStart - start + 1) {
            let candidate = base.distance(to: UnsafeRawPointer(found))
            let matches = needle.withUnsafeBytes { memcmp(base + candidate, $0.baseAddress!, needle.count) == 0 }
            if matches { return candidate }
            start = candidate + 1
        }
        return nil
    }
}
