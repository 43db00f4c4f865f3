import NIOCore
import NIOHTTP1
@testable import RelayGateway

/// The parser of an upstream's HTTP/1.1 responses must give the same parts (body joined),
/// the same failure and the same end whether the connection's bytes come whole, in reads
/// of 1 to 16 bytes (split points from input byte 0), or one byte at a time (inputs of
/// at most 256 bytes); and never hand on more body bytes than it was given.
///
/// The input is the answer to one request, as the connection sees it: reading stops at the
/// response's end, and the connection is kept only if nothing came after it (bytes after
/// the end in the same read make the parser say so; in a later read, the connection,
/// which has no request out, closes).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzUpstreamHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let seed = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let whole = parse(bytes, readSizes: [bytes.count])
    precondition(whole.body.count <= bytes.count, "upstream HTTP: more body than input")
    let split = parse(bytes, readSizes: readSizes(seed: seed, total: bytes.count))
    precondition(whole == split, "upstream HTTP: whole and split reads differ: \(whole) | \(split)")
    if bytes.count <= 256 {
        let bytewise = parse(bytes, readSizes: Array(repeating: 1, count: bytes.count))
        precondition(whole == bytewise, "upstream HTTP: whole and one-byte reads differ: \(whole) | \(bytewise)")
    }
    return 0
}

private struct Outcome: Equatable, CustomStringConvertible {
    var description: String { "\(self.parts), \(self.body.count) body bytes, failure \(self.failure ?? "none"), reusable \(self.reusable.map { "\($0)" } ?? "-")" }
    var parts: [String] = []
    var body: [UInt8] = []
    var failure: String?
    /// Whether the connection is kept after the response's end; nil without an end.
    var reusable: Bool?
}

/// Feeds `bytes` in reads of `readSizes`, then ends the input, as the connection does.
private func parse(_ bytes: [UInt8], readSizes: [Int]) -> Outcome {
    var outcome = Outcome()
    var parser = HTTP1ResponseParser()
    func emit(_ part: HTTP1ResponseParser.Part) {
        switch part {
        case .head(let head):
            outcome.parts.append("head \(head.version) \(head.status.code) \(head.headers.map { "\($0.name): \($0.value)" })")
        case .body(let buffer):
            // Joined: where a read ends must not show.
            outcome.body += buffer.readableBytesView
        case .end(let reusable):
            outcome.reusable = reusable
        }
    }
    do {
        var start = 0
        for size in readSizes where start < bytes.count && outcome.reusable == nil {
            let end = min(bytes.count, start + size)
            try parser.feed(ByteBuffer(bytes: bytes[start..<end]), emit)
            start = end
        }
        if outcome.reusable == nil {
            try parser.endOfInput(emit)
        } else if start < bytes.count {
            outcome.reusable = false  // bytes nobody asked for: the connection closes
        }
    } catch {
        outcome.failure = "\(error)"
    }
    return outcome
}

private func readSizes(seed: UInt8, total: Int) -> [Int] {
    var state = UInt32(seed) &+ 1
    var sizes: [Int] = []
    var covered = 0
    while covered < total {
        state = state &* 1_103_515_245 &+ 12345
        let size = Int((state >> 16) % 16) + 1
        sizes.append(size)
        covered += size
    }
    return sizes
}
