@testable import RelayCore

/// The JSON parser must not crash or hang; what it accepts must survive writing and parsing
/// again unchanged; and the chunk scanner (the hot path) must agree with the tree-based
/// reference on every document the parser accepts (as JSONParserCorpusTests checks over
/// the recorded corpus).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let scanned = bytes.withUnsafeBufferPointer { ChunkScanner.scan($0) }
    if let reference = ChunkScanner.reference(bytes) {
        precondition(scanned?.kind == reference.kind, "JSON: scanner kind differs from the reference")
        precondition(scanned?.facts == reference.facts, "JSON: scanner facts differ from the reference")
    }
    if let value = try? JSONValue(parsing: bytes) {
        let again = try? JSONValue(parsing: Array(value.serialized().utf8))
        precondition(again == value, "JSON: written value does not parse back equal")
    }
    return 0
}
