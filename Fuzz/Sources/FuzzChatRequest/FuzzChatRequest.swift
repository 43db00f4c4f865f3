import NIOCore
import RelayCore

/// A client's request body: accepted or refused with a RelayError, never a crash or hang;
/// what the gateway then does to an accepted request (rename the model, add
/// `stream_options`: edits of the body's bytes) must give a body that is again an
/// acceptable request, and that says what the request's tree says.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzChatRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    guard var request = try? ChatRequest(body: body) else { return 0 }
    _ = request.clientRequestedStreamUsage
    _ = request.messages
    request.setUpstreamModel(request.model + "-upstream")
    request.set("stream_options", to: ["include_usage": true])
    let again: ChatRequest
    do {
        again = try ChatRequest(body: request.body)
    } catch {
        preconditionFailure("ChatRequest: the re-serialised body is refused: \(error)")
    }
    // `model` stays the client's name; the body carries the upstream's.
    precondition(again.model == request.json["model"]?.stringValue && again.stream == request.stream, "ChatRequest: round trip changed the request")
    precondition(again.json == request.json, "ChatRequest: the edited body says something else than the tree")
    return 0
}
