import NIOCore
import RelayCore

/// A client's request body: accepted or refused with a RelayError, never a crash or hang,
/// and refused exactly when the checks on its parsed tree refuse it, for the same reason
/// (the request is checked without building the tree). What the gateway then does to an
/// accepted request (rename the model, add `stream_options`: edits of the body's bytes)
/// must give a body that is again an acceptable request, and whose tree is the client's
/// with those two members set.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzChatRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let body = ByteBuffer(bytes: bytes)
    let tree = try? JSONValue(parsing: bytes)
    let expected = refusal(of: tree)
    var request: ChatRequest
    do {
        request = try ChatRequest(body: body)
    } catch {
        precondition(error.code == expected, "ChatRequest: refused with \(error.code ?? "nil"), the tree's checks say \(expected ?? "accept")")
        return 0
    }
    precondition(expected == nil, "ChatRequest: accepted, the tree's checks say \(expected ?? "")")
    guard case .object(var object) = tree else { preconditionFailure("ChatRequest: accepted a body that is not an object") }
    precondition(request.model == object["model"]?.stringValue && request.stream == (object["stream"]?.boolValue ?? false), "ChatRequest: read another model or stream than the tree's")
    precondition(request.messages == object["messages"]?.arrayValue, "ChatRequest: read other messages than the tree's")
    precondition(request.clientRequestedStreamUsage == (object["stream_options"]?["include_usage"]?.boolValue ?? false), "ChatRequest: read other stream options than the tree's")
    request.setUpstreamModel(request.model + "-upstream")
    request.set("stream_options", to: ["include_usage": true])
    object["model"] = .string(request.model + "-upstream")
    object["stream_options"] = ["include_usage": true]
    let again: ChatRequest
    do {
        again = try ChatRequest(body: request.body)
    } catch {
        preconditionFailure("ChatRequest: the edited body is refused: \(error)")
    }
    // `model` stays the client's name; the body carries the upstream's.
    precondition(again.model == request.upstreamModel && again.stream == request.stream, "ChatRequest: the edits changed the request")
    precondition(again.json == object, "ChatRequest: the edited body says something else than the client's tree with the edits")
    return 0
}

/// The code the request's checks give a body whose parsed tree is `tree` (nil: not JSON),
/// or nil when they accept it.
func refusal(of tree: JSONValue?) -> String? {
    guard case .object(let object)? = tree else { return "invalid_json" }
    guard let model = object["model"]?.stringValue, !model.isEmpty else { return "missing_model" }
    guard let messages = object["messages"]?.arrayValue else { return "missing_messages" }
    guard !messages.isEmpty else { return "empty_messages" }
    switch object["stream"] {
    case nil, .null?, .bool?: return nil
    default: return "invalid_stream"
    }
}
