import NIOCore
@testable import RelayCore

/// The JSON parser must not crash or hang; what it accepts must survive writing and parsing
/// again unchanged; and the chunk scanner (the hot path) must agree with the tree-based
/// reference on every document the parser accepts (as JSONParserCorpusTests checks over
/// the recorded corpus).
///
/// An input with a line break is also read as two chunks of one stream, the line before
/// and the rest: the second, read after the first (whose template it may match), must get
/// the answer it gets alone. The seeds hold consecutive chunks of the corpus's streams.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let scanned = bytes.withUnsafeBufferPointer { ChunkScanner.scan($0) }
    if let reference = ChunkScanner.reference(bytes) {
        precondition(scanned?.kind == reference.kind, "JSON: scanner kind differs from the reference")
        precondition(scanned?.facts == reference.facts, "JSON: scanner facts differ from the reference")
    }
    if let lineBreak = bytes.firstIndex(of: UInt8(ascii: "\n")) {
        let first = SSEFrame(payload: bytes[..<lineBreak])
        let second = SSEFrame(payload: bytes[(lineBreak + 1)...])
        var envelope = ChunkEnvelope()
        _ = StreamEvent(upstream: first, envelope: &envelope)
        let afterFirst = StreamEvent(upstream: second, envelope: &envelope)
        let alone = StreamEvent(upstream: second)
        precondition(afterFirst.kind == alone.kind, "JSON: a chunk read after another is of another kind than alone")
        precondition(afterFirst.facts == alone.facts, "JSON: a chunk read after another has other facts than alone")
    }
    if let value = try? JSONValue(parsing: bytes) {
        let again = try? JSONValue(parsing: Array(value.serialized().utf8))
        precondition(again == value, "JSON: written value does not parse back equal")
    }
    return 0
}

extension SSEFrame {
    /// A `data:` event carrying `payload`, as the SSE decoder would make it.
    fileprivate init(payload: ArraySlice<UInt8>) {
        let data = ByteBuffer(bytes: payload)
        var raw = ByteBuffer(string: "data: ")
        raw.writeImmutableBuffer(data)
        raw.writeString("\n\n")
        self.init(raw: raw, data: data)
    }
}
