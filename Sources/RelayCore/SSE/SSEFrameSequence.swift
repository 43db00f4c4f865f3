public import NIOCore

/// The ``SSEFrame``s of a body read as a sequence of byte buffers (an upstream's body as
/// it arrives): what the gateway decodes every stream with.
///
/// It does what NIOCore's `AsyncSequence.decode(using: SSEDecoder())` does, without its
/// generic byte-to-message processor, whose code is not specialised for our decoder and
/// looked up generic metadata for every frame (7% of a relayed chunk's CPU in perf). A
/// read that starts when the previous one is used up becomes the buffer as it is, with no
/// copy; that is the usual case, since providers write one event per HTTP chunk.
public struct SSEFrameSequence<Bytes: AsyncSequence>: AsyncSequence where Bytes.Element == ByteBuffer {
    public typealias Element = SSEFrame

    let bytes: Bytes
    let maximumEventSize: Int

    public init(_ bytes: Bytes, maximumEventSize: Int = 1 << 20) {
        self.bytes = bytes
        self.maximumEventSize = maximumEventSize
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(bytes: self.bytes.makeAsyncIterator(), decoder: SSEDecoder(maximumEventSize: self.maximumEventSize))
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var bytes: Bytes.AsyncIterator
        var decoder: SSEDecoder
        /// The bytes of the block being read (the decoder's offsets are relative to its
        /// reader index).
        var buffer = ByteBuffer()
        var inputEnded = false
        var finished = false
        /// How many reads have been taken in: a frame decoded after it changed may hold
        /// bytes of a read that came later than the frame before (``UpstreamEventSequence``
        /// reads the clock once a read, not once a frame).
        public private(set) var reads = 0

        /// Reads past this many consumed bytes compact the buffer before they are appended.
        static var compactionThreshold: Int { 16 * 1024 }

        public mutating func next() async throws -> SSEFrame? {
            while !self.finished {
                if let frame = try self.decodeBuffered() { return frame }
                if self.finished { return nil }
                self.releaseUsedBuffer()
                self.append(try await self.bytes.next(isolation: #isolation))
            }
            return nil
        }

        /// The next frame in the bytes read so far; at the end of the input, the last one
        /// (and `finished` when there is none).
        private mutating func decodeBuffered() throws -> SSEFrame? {
            if self.inputEnded {
                if let frame = try self.decoder.decodeLast(buffer: &self.buffer, seenEOF: true) { return frame }
                self.finished = true
                return nil
            }
            return try self.decoder.decode(buffer: &self.buffer)
        }

        /// Before waiting for the next read: a used-up buffer is let go. It is the last read
        /// (or a slice of it), and kept, it held that read's storage (512 bytes and up) for
        /// as long as a quiet stream waits, and made NIO allocate anew for the next read.
        mutating func releaseUsedBuffer() {
            if self.buffer.readableBytes == 0, self.buffer.capacity > 0 { self.buffer = usedUpBuffer }
        }

        /// Takes a read in; nil is the end of the input.
        private mutating func append(_ read: ByteBuffer?) {
            guard var read else {
                self.inputEnded = true
                return
            }
            self.reads &+= 1
            if self.buffer.readableBytes == 0 {
                self.buffer = read
            } else {
                if self.buffer.readerIndex > Self.compactionThreshold { self.buffer.discardReadBytes() }
                self.buffer.writeBuffer(&read)
            }
        }
    }
}

extension SSEFrameSequence.AsyncIterator: ReadyIterator, DeadlineIterator where Bytes.AsyncIterator: DeadlineIterator {
    nonisolated(nonsending) public mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<SSEFrame> {
        while true {
            let ready = try self.nextIfReady()
            guard case .deadlinePassed = ready else { return ready }
            self.releaseUsedBuffer()
            switch try await self.bytes.next(before: deadline) {
            case .element(let read): self.append(read)
            case .end: self.append(nil)
            case .deadlinePassed: return .deadlinePassed
            }
        }
    }

    public var canBeReady: Bool { self.bytes.canBeReady }

    /// A frame from the bytes read so far and the reads the body has ready.
    public mutating func nextIfReady() throws -> NextBeforeDeadline<SSEFrame> {
        while !self.finished {
            if let frame = try self.decodeBuffered() { return .element(frame) }
            if self.finished { return .end }
            switch try self.bytes.nextIfReady() {
            case .element(let read): self.append(read)
            case .end: self.append(nil)
            case .deadlinePassed: return .deadlinePassed
            }
        }
        return .end
    }
}

extension SSEFrameSequence: Sendable where Bytes: Sendable {}

/// What a used-up buffer is replaced with: empty, and shared, so that letting go of a
/// read allocates nothing.
private let usedUpBuffer = ByteBuffer()
