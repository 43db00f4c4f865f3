import NIOCore
import RelayCore

/// Drives an ``SSEDecoder`` over a list of reads the way NIO does: either by hand, exactly as
/// `NIOSingleStepByteToMessageProcessor` would (one accumulating buffer, `decode` until nil
/// after each read, `decodeLast` until nil at the end), or through ``SSEFrameSequence``,
/// which is what the gateway itself uses.
enum SSEFeed {
    /// What feeding a list of reads produced.
    struct Outcome {
        var frames: [SSEFrame] = []
        var error: (any Error)?
        /// Bytes handed to the decoder before it finished or threw.
        var bytesFed = 0
        /// The most bytes the accumulating buffer ever held.
        var peakBuffered = 0
    }

    /// Feeds `reads` by hand and records what happened, errors included.
    static func run(_ reads: [ByteBuffer], maximumEventSize: Int = 1 << 20) -> Outcome {
        var decoder = SSEDecoder(maximumEventSize: maximumEventSize)
        var buffer = ByteBuffer()
        var outcome = Outcome()
        do {
            for var read in reads {
                outcome.bytesFed += read.readableBytes
                buffer.writeBuffer(&read)
                outcome.peakBuffered = max(outcome.peakBuffered, buffer.readableBytes)
                while let frame = try decoder.decode(buffer: &buffer) { outcome.frames.append(frame) }
                // NIO reclaims consumed bytes now and then; offsets must survive that.
                if buffer.readerIndex > 256 { buffer.discardReadBytes() }
            }
            while let frame = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { outcome.frames.append(frame) }
        } catch {
            outcome.error = error
        }
        return outcome
    }

    /// Feeds `reads` by hand; throws what the decoder throws.
    static func frames(_ reads: [ByteBuffer], maximumEventSize: Int = 1 << 20) throws -> [SSEFrame] {
        let outcome = self.run(reads, maximumEventSize: maximumEventSize)
        if let error = outcome.error { throw error }
        return outcome.frames
    }

    /// Decodes `reads` through ``SSEFrameSequence``, as the gateway does.
    static func framesAsync(_ reads: [ByteBuffer], maximumEventSize: Int = 1 << 20) async throws -> [SSEFrame] {
        var frames: [SSEFrame] = []
        for try await frame in SSEFrameSequence(ReadSequence(reads: reads), maximumEventSize: maximumEventSize) {
            frames.append(frame)
        }
        return frames
    }

    // MARK: Splitting input into reads

    static func whole(_ bytes: [UInt8]) -> [ByteBuffer] { [ByteBuffer(bytes: bytes)] }

    static func bytewise(_ bytes: [UInt8]) -> [ByteBuffer] { bytes.map { ByteBuffer(bytes: [$0]) } }

    static func whole(_ text: String) -> [ByteBuffer] { self.whole(Array(text.utf8)) }

    static func bytewise(_ text: String) -> [ByteBuffer] { self.bytewise(Array(text.utf8)) }

    /// Splits `bytes` into reads of random length 1...maximumRead (empty reads included now and then).
    static func randomReads(_ bytes: [UInt8], maximumRead: Int, using rng: inout some RandomNumberGenerator) -> [ByteBuffer] {
        var reads: [ByteBuffer] = []
        var start = 0
        while start < bytes.count {
            if Int.random(in: 0..<20, using: &rng) == 0 { reads.append(ByteBuffer()) }
            let length = min(bytes.count - start, Int.random(in: 1...maximumRead, using: &rng))
            reads.append(ByteBuffer(bytes: bytes[start..<(start + length)]))
            start += length
        }
        return reads
    }
}

/// A list of reads as an async sequence, like an HTTP body.
struct ReadSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reads: [ByteBuffer]

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<ByteBuffer>
        mutating func next() async -> ByteBuffer? { self.remaining.popFirst() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.reads[...]) }
}

/// An ``SSEFrame`` in plain values, so that a failed comparison prints something readable.
struct FrameSnapshot: Equatable, CustomStringConvertible {
    var raw: String
    var data: String?
    var eventType: String?
    var id: String?
    var retry: Int?
    var hasComment: Bool

    init(_ frame: SSEFrame) {
        self.raw = String(decoding: frame.raw.readableBytesView, as: UTF8.self)
        self.data = frame.data.map { String(decoding: $0.readableBytesView, as: UTF8.self) }
        self.eventType = frame.eventType
        self.id = frame.id
        self.retry = frame.retry
        self.hasComment = frame.hasComment
    }

    init(raw: String, data: String? = nil, eventType: String? = nil, id: String? = nil, retry: Int? = nil, hasComment: Bool = false) {
        self.raw = raw
        self.data = data
        self.eventType = eventType
        self.id = id
        self.retry = retry
        self.hasComment = hasComment
    }

    var description: String {
        var parts = ["raw: \(self.raw.debugDescription)"]
        if let data { parts.append("data: \(data.debugDescription)") }
        if let eventType { parts.append("event: \(eventType.debugDescription)") }
        if let id { parts.append("id: \(id.debugDescription)") }
        if let retry { parts.append("retry: \(retry)") }
        if self.hasComment { parts.append("comment") }
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

extension Array where Element == SSEFrame {
    var snapshots: [FrameSnapshot] { self.map { FrameSnapshot($0) } }

    /// Every frame's raw bytes, one after the other.
    var concatenatedRaw: [UInt8] { self.flatMap { [UInt8]($0.raw.readableBytesView) } }
}

/// A small, fast, seedable generator (SplitMix64), so that a failing case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
