import NIOCore
@testable import RelayCore

/// The SSE decoder, driven the way the daemon drives it (NIOCore's single-step processor),
/// must give the same frames, and the same verdict on an oversized block, however the
/// stream is split into reads. Input: byte 0 seeds the split points, byte 1 picks a small
/// size limit so the `eventTooLarge` path is reached too; the rest is the stream.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSSE(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let seed = data[0]
    let smallLimit = Int(data[1]) + 1
    let stream = UnsafeBufferPointer(start: data + 2, count: size - 2)
    // The daemon's limit (max_event_size's default), then a small one.
    for limit in [1 << 20, smallLimit] {
        let whole = decode(stream, limit: limit, readSizes: [stream.count])
        let split = decode(stream, limit: limit, readSizes: readSizes(seed: seed, total: stream.count))
        precondition(whole == split, "SSE: whole and split reads differ")
        // One-byte reads cost a buffer per byte: only for short inputs, to keep the pace up.
        if stream.count <= 128 {
            let bytewise = decode(stream, limit: limit, readSizes: Array(repeating: 1, count: stream.count))
            precondition(whole == bytewise, "SSE: whole and one-byte reads differ")
        }
    }
    return 0
}

private struct Outcome: Equatable {
    var frames: [SSEFrame] = []
    var kinds: [StreamEvent.Kind] = []
    var tooLarge = false
}

/// Feeds `stream` in reads of `readSizes`, then ends the input, as the upstream body does.
private func decode(_ stream: UnsafeBufferPointer<UInt8>, limit: Int, readSizes: [Int]) -> Outcome {
    var outcome = Outcome()
    let processor = NIOSingleStepByteToMessageProcessor(SSEDecoder(maximumEventSize: limit))
    func receive(_ frame: SSEFrame) {
        outcome.frames.append(frame)
        outcome.kinds.append(StreamEvent(upstream: frame).kind)
    }
    do {
        var offset = 0
        for size in readSizes where size > 0 {
            try processor.process(buffer: ByteBuffer(bytes: UnsafeBufferPointer(rebasing: stream[offset..<(offset + size)])), receive)
            offset += size
        }
        try processor.finishProcessing(seenEOF: true, receive)
    } catch is SSEDecoderError {
        outcome.tooLarge = true
    } catch {
        preconditionFailure("SSE: unexpected error \(error)")
    }
    return outcome
}

/// Read sizes from 1 to 16 that add up to `total`, from a small generator seeded by `seed`.
private func readSizes(seed: UInt8, total: Int) -> [Int] {
    var state = UInt32(seed) &* 2_654_435_761 | 1
    var sizes: [Int] = []
    var left = total
    while left > 0 {
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        let size = min(left, Int(state % 16) + 1)
        sizes.append(size)
        left -= size
    }
    return sizes
}
