import RelayGateway

/// The configuration file: parsed and validated, or refused with a ConfigError, never a
/// crash or hang. Relative paths resolve against a folder that does not exist, so nothing
/// the input names is read.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? ConfigLoader.parse(yaml: text, baseDirectory: "/nonexistent/chatrelayd-fuzz")
    return 0
}
