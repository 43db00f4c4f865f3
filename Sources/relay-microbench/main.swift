// relay-microbench: the CPU cost of reading one streamed event, the relay's per-chunk hot
// path, measured over every `data:` event of the recorded streams. It compares how an event
// was read before (JSONDecoder into a tree, then facts from the tree), the hand-written
// parser into a tree, and the scanner the relay uses (facts straight from the bytes).
//
//     swift run -c release relay-microbench [FOLDER...]    (default: the fixtures and ../shared/corpus/chat)
//
// A measurement for the README and the benchmark notes, not a test: nothing is asserted.
import Foundation
import NIOCore
import RelayCore
import RelayGateway

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
let folders = CommandLine.arguments.count > 1
    ? Array(CommandLine.arguments.dropFirst())
    : [root + "/Tests/Fixtures/cassettes", root + "/../shared/corpus/chat"]

var collected: [ByteBuffer] = []
var requestBodies: [ByteBuffer] = []
for folder in folders {
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".yaml") }.sorted()
    for name in names {
        guard let cassette = try? Cassette(path: folder + "/" + name) else { continue }
        for interaction in cassette.interactions {
            if let request = interaction.requestJSON, request["messages"] != nil { requestBodies.append(ByteBuffer(string: request.serialized())) }
        }
        for interaction in cassette.interactions where interaction.contentType?.contains("text/event-stream") == true {
            for line in interaction.responseBody.split(separator: "\n") where line.hasPrefix("data: {") {
                collected.append(ByteBuffer(string: String(line.dropFirst(6))))
            }
        }
    }
}
let payloads = collected
guard !payloads.isEmpty else {
    print("no data events found in \(folders)")
    exit(1)
}
let bytes = payloads.reduce(0) { $0 + $1.readableBytes }
print("\(payloads.count) data events, \(bytes / payloads.count) bytes on average, from \(folders.joined(separator: ", "))")

/// Runs `body` over every payload until about a second has passed; returns ns per event.
func measure(_ label: String, _ payloads: [ByteBuffer], unit: String = "event", _ body: (ByteBuffer) -> Bool) -> Double {
    let clock = ContinuousClock()
    var rounds = 0
    var chunks = 0
    let start = clock.now
    repeat {
        for payload in payloads where body(payload) { chunks += 1 }
        rounds += 1
    } while start.duration(to: clock.now) < .seconds(1)
    let elapsed = start.duration(to: clock.now)
    let (seconds, attoseconds) = elapsed.components
    let nanoseconds = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
    let perEvent = nanoseconds / Double(rounds * payloads.count)
    print(String(format: "%-50@ %9.0f ns per %@  (%d accepted per round)", label as NSString, perEvent, unit as NSString, chunks / rounds))
    return perEvent
}

let decoder = JSONDecoder()
let before = measure("JSONDecoder tree, then facts (before)", payloads) { payload in
    guard case .object(let object)? = try? decoder.decode(JSONValue.self, from: Data(payload.readableBytesView)) else { return false }
    return ChunkFacts(object).carriesPayload || true
}
let tree = measure("hand-written parser tree, then facts", payloads) { payload in
    guard case .object(let object)? = try? JSONValue(parsing: payload.readableBytesView) else { return false }
    return ChunkFacts(object).carriesPayload || true
}
let scanner = measure("scanner: facts from the bytes, each event alone", payloads) { payload in
    StreamEvent(upstream: SSEFrame(raw: payload, data: payload)).kind == .chunk
}
// As the upstream's event sequence reads: in stream order, the chunk before's id, model and
// template kept (a chunk that repeats it but for skipped strings' text is not scanned).
nonisolated(unsafe) var envelope = ChunkEnvelope()
let inStreamOrder = measure("scanner in stream order (the relay now)", payloads) { payload in
    StreamEvent(upstream: SSEFrame(raw: payload, data: payload), envelope: &envelope).kind == .chunk
}
print(String(format: "scanner is %.1fx faster than before, %.1fx faster than the parsed tree", before / scanner, tree / scanner))
print(String(format: "in stream order: %.0f%% of the scanner's time alone", 100 * inStreamOrder / scanner))

// A client's request as the gateway checks it: the whole tree built, then read (before), or
// checked without a tree, with a member read alone as the usage stage reads it (now).
let requestBytes = requestBodies.reduce(0) { $0 + $1.readableBytes }
print("\n\(requestBodies.count) request bodies, \(requestBodies.isEmpty ? 0 : requestBytes / requestBodies.count) bytes on average")
if !requestBodies.isEmpty {
    let treeRequest = measure("request: parsed tree, then its checks (before)", requestBodies, unit: "request") { body in
        guard case .object(let object)? = try? JSONValue(parsing: body.readableBytesView) else { return false }
        return object["model"]?.stringValue != nil && object["messages"]?.arrayValue?.isEmpty == false
            && object["stream_options"]?["include_usage"]?.boolValue != true
    }
    let checkedRequest = measure("request: checked without a tree (the relay now)", requestBodies, unit: "request") { body in
        guard let request = try? ChatRequest(body: body) else { return false }
        return request.member("stream_options")?["include_usage"]?.boolValue != true
    }
    print(String(format: "a request: %.1fx faster than its tree", treeRequest / checkedRequest))
}
