public import NIOCore

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

/// Splits a server-sent-event byte stream into ``SSEFrame``s.
///
/// Correct for any split of the input into reads, one byte at a time included: it keeps
/// the bytes of the block it is reading in the buffer and remembers how far it has
/// scanned, so each byte is looked at once. Lines end in LF, CR or CR LF; `:` lines are
/// comments; several `data` lines join with LF; `event`, `id` and `retry` are read. A
/// block that grows past `maximumEventSize` throws ``SSEDecoderError`` instead of growing
/// memory. At the end of input an unfinished block is delivered as if it had been ended
/// (providers that forget the last blank line or `[DONE]` still get their last event
/// through).
///
/// ``SSEFrameSequence`` drives it over a body as it is read; tests also feed it by hand.
public struct SSEDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = SSEFrame

    /// The largest block accepted, in bytes.
    public let maximumEventSize: Int

    // Scan state for the block being read; offsets are relative to the buffer's reader index,
    // which does not move until the block is complete.
    private var scanned = 0
    private var lineStart = 0
    private var lastByteWasCR = false
    private var skipLFAtStart = false
    private var atStreamStart = true
    private var block = BlockFields()

    private struct BlockFields {
        var dataStart = -1
        var dataEnd = -1
        var joinedData: ByteBuffer?
        var eventType: String?
        var id: String?
        var retry: Int?
        var hasComment = false
        var hasField: Bool { dataStart >= 0 || eventType != nil || id != nil || retry != nil || hasComment }
    }

    public init(maximumEventSize: Int = 1 << 20) {
        self.maximumEventSize = maximumEventSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> SSEFrame? {
        while true {
            guard let outcome = try self.scan(&buffer, endOfInput: false) else { return nil }
            if let frame = outcome { return frame }
            // An empty block (a stray blank line): consumed, nothing to deliver; keep going.
        }
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> SSEFrame? {
        while true {
            guard let outcome = try self.scan(&buffer, endOfInput: true) else { return nil }
            if let frame = outcome { return frame }
        }
    }

    private static let lf: UInt8 = 0x0A
    private static let cr: UInt8 = 0x0D
    private static let colon: UInt8 = 0x3A
    private static let space: UInt8 = 0x20

    /// Returns nil when more input is needed, `.some(nil)` for a block with nothing in it,
    /// and `.some(frame)` for a finished block.
    private mutating func scan(_ buffer: inout ByteBuffer, endOfInput: Bool) throws -> SSEFrame?? {
        if self.skipLFAtStart, buffer.readableBytes > 0 {
            if buffer.readableBytesView.first == Self.lf { buffer.moveReaderIndex(forwardBy: 1) }
            self.skipLFAtStart = false
        }
        if self.atStreamStart {
            // A UTF-8 byte order mark may open the stream; the spec says to drop it.
            let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
            let head = buffer.readableBytesView
            if head.isEmpty || (head.count < 3 && !endOfInput && bom.starts(with: head)) { return nil }
            if head.starts(with: bom) { buffer.moveReaderIndex(forwardBy: 3) }
            self.atStreamStart = false
        }
        // The bytes are read in place, through a pointer: indexing a `ByteBufferView` byte by
        // byte cost a quarter of the decoder's time in bounds and storage checks.
        let blockEnd = try buffer.withUnsafeReadableBytes { bytes in try self.scanLines(bytes) }
        if let blockEnd {
            return .some(self.finishBlock(&buffer, length: blockEnd.length, synthesizeLF: blockEnd.synthesizeLF))
        }
        let count = buffer.readableBytes
        guard endOfInput, count > 0 else { return nil }
        // End of input inside a block: end the last line and the block ourselves.
        var suffix = ""
        if self.lineStart < count {
            buffer.withUnsafeReadableBytes { bytes in self.readLine(bytes, start: self.lineStart, end: count) }
            suffix = "\n\n"
        } else {
            // The last line was ended; add the blank line (after a lone CR, LF alone would
            // only complete a CR LF, so add two).
            suffix = self.lastByteWasCR ? "\n\n" : "\n"
        }
        self.lastByteWasCR = false
        let frame = self.finishBlock(&buffer, length: count, synthesizeLF: false, appending: suffix)
        return .some(frame)
    }

    /// Where the block in `bytes` ends (its length, with the blank line, and whether that
    /// line ended in a lone CR at the end of the input), or nil when no blank line has come
    /// yet. Reads the lines it passes into `block` and remembers how far it got.
    private mutating func scanLines(_ bytes: UnsafeRawBufferPointer) throws(SSEDecoderError) -> (length: Int, synthesizeLF: Bool)? {
        var index = self.scanned
        let count = bytes.count
        while index < count {
            if self.lastByteWasCR {
                self.lastByteWasCR = false
                if bytes[index] == Self.lf {
                    index += 1
                    self.lineStart = index
                    // Checked here too, so the verdict does not depend on where reads split.
                    if index > self.maximumEventSize { throw .eventTooLarge(limit: self.maximumEventSize) }
                    continue
                }
            }
            let lineEnd = Self.firstLineBreak(in: bytes, from: index)
            guard lineEnd < count else {
                index = count
                break
            }
            let byte = bytes[lineEnd]
            index = lineEnd + 1
            if byte == Self.cr { self.lastByteWasCR = true }
            if lineEnd == self.lineStart {
                // A blank line: the block is complete.
                var synthesizeLF = false
                if byte == Self.cr {
                    if index < count, bytes[index] == Self.lf {
                        index += 1
                    } else {
                        synthesizeLF = true
                        if index == count { self.skipLFAtStart = true }
                    }
                    self.lastByteWasCR = false
                }
                return (index, synthesizeLF)
            }
            self.readLine(bytes, start: self.lineStart, end: lineEnd)
            self.lineStart = index
            if index > self.maximumEventSize { throw .eventTooLarge(limit: self.maximumEventSize) }
        }
        self.scanned = index
        if index > self.maximumEventSize { throw .eventTooLarge(limit: self.maximumEventSize) }
        return nil
    }

    /// The offset of the first CR or LF at or after `start`, or `bytes.count` if there is
    /// none. `memchr` looks at many bytes per instruction; lines end in LF nearly always, so
    /// CR is only looked for before the LF.
    private static func firstLineBreak(in bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        guard start < bytes.count, let base = bytes.baseAddress else { return bytes.count }
        let lineFeed = memchr(base + start, Int32(Self.lf), bytes.count - start).map { UnsafeRawPointer($0) - base } ?? bytes.count
        guard lineFeed > start, let carriageReturn = memchr(base + start, Int32(Self.cr), lineFeed - start) else { return lineFeed }
        return UnsafeRawPointer(carriageReturn) - base
    }

    private mutating func readLine(_ bytes: UnsafeRawBufferPointer, start: Int, end: Int) {
        if bytes[start] == Self.colon {
            self.block.hasComment = true
            return
        }
        var nameEnd = start
        while nameEnd < end, bytes[nameEnd] != Self.colon { nameEnd += 1 }
        var valueStart = nameEnd < end ? nameEnd + 1 : end
        if valueStart < end, bytes[valueStart] == Self.space { valueStart += 1 }
        let name = UnsafeRawBufferPointer(rebasing: bytes[start..<nameEnd])
        let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<end])
        if name.spells("data") {
            if self.block.dataStart < 0 {
                self.block.dataStart = valueStart
                self.block.dataEnd = end
            } else {
                if self.block.joinedData == nil {
                    var joined = ByteBuffer()
                    joined.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[self.block.dataStart..<self.block.dataEnd]))
                    self.block.joinedData = joined
                }
                self.block.joinedData!.writeInteger(Self.lf)
                self.block.joinedData!.writeBytes(value)
            }
        } else if name.spells("event") {
            self.block.eventType = String(decoding: value, as: UTF8.self)
        } else if name.spells("id") {
            self.block.id = String(decoding: value, as: UTF8.self)
        } else if name.spells("retry") {
            // The spec ignores a retry that is not all ASCII digits (and keeps an earlier one).
            if !value.isEmpty, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let retry = Int(String(decoding: value, as: UTF8.self)) {
                self.block.retry = retry
            }
        }
        // Other field names are ignored, as the spec says, but stay in `raw`.
    }

    private mutating func finishBlock(
        _ buffer: inout ByteBuffer,
        length: Int,
        synthesizeLF: Bool,
        appending suffix: String = ""
    ) -> SSEFrame? {
        // Swapped out rather than copied and reset: a copy retains its strings and buffer.
        var fields = BlockFields()
        swap(&fields, &self.block)
        self.scanned = 0
        self.lineStart = 0
        guard fields.hasField else {
            buffer.moveReaderIndex(forwardBy: length)
            return nil
        }
        var raw = buffer.readSlice(length: length)!
        if synthesizeLF || !suffix.isEmpty {
            var extended = ByteBuffer()
            extended.reserveCapacity(raw.readableBytes + 2)
            extended.writeImmutableBuffer(raw)
            if synthesizeLF { extended.writeInteger(Self.lf) }
            extended.writeString(suffix)
            raw = extended
        }
        let data: ByteBuffer?
        if let joined = fields.joinedData {
            data = joined
        } else if fields.dataStart >= 0 {
            data = raw.getSlice(at: raw.readerIndex + fields.dataStart, length: fields.dataEnd - fields.dataStart)
        } else {
            data = nil
        }
        return SSEFrame(
            raw: raw,
            data: data,
            eventType: fields.eventType,
            id: fields.id,
            retry: fields.retry,
            hasComment: fields.hasComment
        )
    }
}

/// Why an event stream could not be decoded.
public enum SSEDecoderError: Error, Equatable, CustomStringConvertible {
    /// A single event grew past the configured limit.
    case eventTooLarge(limit: Int)

    public var description: String {
        switch self {
        case .eventTooLarge(let limit): "upstream event larger than \(limit) bytes"
        }
    }
}
