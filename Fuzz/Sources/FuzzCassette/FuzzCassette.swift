import NIOCore
@testable import RelayCore
@testable import RelayGateway

/// A go-vcr v2 cassette: parsed or refused with a ConfigError; each recorded response is
/// then replayed as the cassette upstream does, split into its recorded writes and
/// decoded into stream events. No crash, no hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCassette(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let cassette = try? Cassette(yaml: text) else { return 0 }
    for interaction in cassette.interactions {
        _ = interaction.requestJSON?["messages"]
        let processor = NIOSingleStepByteToMessageProcessor(SSEDecoder(maximumEventSize: 1 << 20))
        do {
            for piece in CassetteUpstream.eventPieces(of: ByteBuffer(string: interaction.responseBody)) {
                try processor.process(buffer: piece) { _ = StreamEvent(upstream: $0) }
            }
            try processor.finishProcessing(seenEOF: true) { _ = StreamEvent(upstream: $0) }
        } catch is SSEDecoderError {
            continue
        } catch {
            preconditionFailure("Cassette: unexpected error \(error)")
        }
    }
    return 0
}
