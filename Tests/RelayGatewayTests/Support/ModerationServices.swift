import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import RelayCore
@testable import RelayGateway
import Synchronization

/// Stand-ins for the moderation tests: an HTTP moderation service and a scripted chat
/// upstream, both on loopback, both recording what they were asked so tests can await it.
final class ModerationTestServer: Sendable {
    /// `http://127.0.0.1:PORT`, or the socket path for a Unix-socket server.
    let address: String
    private let runner: Task<Void, any Error>
    private let history = Mutex<(seen: [String], bodies: [String: JSONValue], waiters: [(Set<String>, CheckedContinuation<String?, Never>)])>(([], [:], []))
    private let handler: @Sendable (ModerationTestServer, Request, JSONValue?, consuming ResponseWriter, any Channel) async throws -> Void

    private init(address: String, runner: Task<Void, any Error>, handler: @escaping @Sendable (ModerationTestServer, Request, JSONValue?, consuming ResponseWriter, any Channel) async throws -> Void) {
        self.address = address
        self.runner = runner
        self.handler = handler
    }

    /// Starts a server on 127.0.0.1 (or on `unixSocket`) that answers with `handler`.
    static func start(
        unixSocket: String? = nil,
        handler: @escaping @Sendable (ModerationTestServer, Request, JSONValue?, consuming ResponseWriter, any Channel) async throws -> Void
    ) async throws -> ModerationTestServer {
        let (ports, portSink) = AsyncStream<Int>.makeStream()
        let box = ModerationServerBox()
        let server = Server(
            childChannelSetup: HTTP1Channel(responder: { request, writer, channel in
                var request = request
                let body = try await request.collectBody(upTo: 1 << 20)
                let json = try? JSONValue(parsing: body.readableBytesView)
                guard let owner = box.server else { return }
                try await owner.handler(owner, request, json, writer, channel)
            }),
            configuration: .init(address: unixSocket.map { .unixDomainSocket(path: $0) } ?? .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portSink.yield(channel.localAddress?.port ?? 0) },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "moderation-test-server")
        )
        let runner = Task { try await server.run() }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        let owner = ModerationTestServer(address: unixSocket ?? "http://127.0.0.1:\(port)", runner: runner, handler: handler)
        box.server = owner
        return owner
    }

    func stop() async {
        await stopServer(self.runner)
        let waiting = self.history.withLock { state in
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.1)
        }
        waiting.forEach { $0.resume(returning: nil) }
    }

    /// Notes that `event` happened (and, for requests, the body that came with it).
    func publish(_ event: String, body: JSONValue? = nil) {
        let ready = self.history.withLock { state -> [CheckedContinuation<String?, Never>] in
            state.seen.append(event)
            if let body { state.bodies[event] = body }
            let matching = state.waiters.filter { $0.0.contains(event) }.map(\.1)
            state.waiters.removeAll { $0.0.contains(event) }
            return matching
        }
        ready.forEach { $0.resume(returning: event) }
    }

    /// Waits until `event` has happened (now or earlier).
    func waitFor(_ event: String) async -> Bool {
        await self.waitForAny([event]) != nil
    }

    /// Waits until one of `events` has happened (now or earlier); returns the first seen.
    func waitForAny(_ events: Set<String>) async -> String? {
        await withCheckedContinuation { continuation in
            let seen = self.history.withLock { state -> String? in
                if let seen = state.seen.first(where: events.contains) { return seen }
                state.waiters.append((events, continuation))
                return nil
            }
            if let seen { continuation.resume(returning: seen) }
        }
    }

    var events: [String] { self.history.withLock { $0.seen } }

    private let marks = Mutex<[String: [ContinuousClock.Instant]]>([:])

    /// Notes the time of one more step of `key` (the n-th character sent, say).
    func mark(_ key: String) { self.marks.withLock { $0[key, default: []].append(.now) } }
    func marks(_ key: String) -> [ContinuousClock.Instant] { self.marks.withLock { $0[key] ?? [] } }
    func body(of event: String) -> JSONValue? { self.history.withLock { $0.bodies[event] } }
}

private final class ModerationServerBox: @unchecked Sendable {
    var server: ModerationTestServer?
}

/// A moderation service in the two shapes chatrelayd's `http` hook understands. What it
/// answers depends on the input text: "forbidden" (simple shape, block), "rude" (simple,
/// redact), "violent" (OpenAI shape, flagged), "slow" (answers after 60 s), "crash" (drops
/// the connection), "broken" (HTTP 500); anything else passes (OpenAI shape, not flagged).
enum ModerationService {
    static func start(unixSocket: String? = nil) async throws -> ModerationTestServer {
        try await ModerationTestServer.start(unixSocket: unixSocket) { server, request, json, writer, channel in
            let text = json?["input"]?.stringValue ?? ""
            server.publish("moderate:\(request.headers[HTTPField.Name("X-Chatrelay-Where")!] ?? "?"):\(text)", body: json)
            let answer: JSONValue
            switch text {
            case let t where t.contains("crash"):
                try await channel.close()
                return
            case let t where t.contains("broken"):
                try await writer.writeResponse(HTTPResponse(status: .internalServerError))
                return
            case let t where t.contains("slow"):
                // Answers after a minute, long after the caller gave up.
                try await Task.sleep(for: .seconds(60))
                var head = HTTPResponse(status: .ok)
                head.headerFields[.contentType] = "application/json"
                do {
                    try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"action":"block"}"#)))
                    server.publish("late-answer-sent:\(text)")
                } catch {
                    server.publish("late-answer-failed:\(text)")
                }
                return
            case let t where t.contains("forbidden"):
                answer = ["action": "block", "rule": "service-forbidden"]
            case let t where t.contains("rude"):
                answer = ["action": "redact", "replacement": .string(t.replacingOccurrences(of: "rude", with: "[polite]"))]
            case let t where t.contains("violent"):
                answer = ["id": "modr-1", "model": "omni-moderation-latest", "results": [["flagged": true, "categories": ["violence": true, "hate": false]]]]
            default:
                answer = ["id": "modr-2", "model": "omni-moderation-latest", "results": [["flagged": false, "categories": ["violence": false]]]]
            }
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "application/json"
            try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: answer.serialized())))
        }
    }
}

/// A chat upstream that streams a script chosen by the model's name, for the daemon tests:
/// `...-two`, `...-three`, `...-one` stream the forbidden-phrase text in two, three or
/// one-character chunks, then (for `block` models) keep trickling for seconds so that a
/// cancelled upstream request shows (`cancelled:MODEL`); `...-whole` answers without a
/// stream; `...-hooked` streams sentences for the external hooks.
enum ScriptedChatUpstream {
    static let text = "The code name is project nightingale, keep it secret."

    static func pieces(for model: String) -> [String] {
        if model.hasSuffix("-two") { return ["The code name is project night", "ingale, keep it secret."] }
        if model.hasSuffix("-three") { return ["The code name is proj", "ect nighti", "ngale, keep it secret."] }
        if model.hasSuffix("-one") { return Self.text.map { String($0) } }
        if model.hasSuffix("-hooked") { return ["Hello there. ", "This is forbid", "den stuff. ", "Never seen."] }
        if model.hasSuffix("-polite") { return ["Hello there. ", "Do not be ru", "de. ", "Bye."] }
        if model.hasSuffix("-clean") { return ["Nothing ", "to see ", "here."] }
        return ["Hi."]
    }

    static let pace = Duration.milliseconds(20)

    /// Near misses of the forbidden phrase, and nothing that matches it.
    static let pacedText = "Our plans: the project is fine, the project night shift too. A project nightjar nests here; "
        + "project nightingal was a typo. Projects, prologues and progress: nothing to hide."

    static func chunk(_ delta: String, finish: String? = nil) -> ByteBuffer {
        let reason = finish.map { #""\#($0)""# } ?? "null"
        return ByteBuffer(string: #"data: {"id":"chatcmpl-scripted","object":"chat.completion.chunk","created":1,"model":"scripted-v1","choices":[{"index":0,"delta":\#(delta),"finish_reason":\#(reason)}]}"# + "\n\n")
    }

    static func start() async throws -> ModerationTestServer {
        try await ModerationTestServer.start { server, request, json, writer, channel in
            let model = json?["model"]?.stringValue ?? "?"
            server.publish("request:\(model)", body: json)
            if json?["stream"]?.boolValue != true {
                var head = HTTPResponse(status: .ok)
                head.headerFields[.contentType] = "application/json"
                let answer: JSONValue = [
                    "id": "chatcmpl-whole", "object": "chat.completion", "created": 1, "model": "scripted-v1",
                    "choices": [["index": 0, "message": ["role": "assistant", "content": .string(Self.text)], "finish_reason": "stop"]],
                    "usage": ["prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17],
                ]
                try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: answer.serialized())))
                return
            }
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var body = try await writer.writeHead(head)
            if model.hasSuffix("-paced") {
                // One character per chunk every 20 ms, each send time noted.
                try await body.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                for character in Self.pacedText {
                    server.mark(model)
                    try await body.write(Self.chunk(#"{"content":\#(JSONValue.string(String(character)).serialized())}"#))
                    try await Task.sleep(for: Self.pace)
                }
                try await body.write(Self.chunk("{}", finish: "stop"))
                try await body.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await body.finish(nil)
                return
            }
            do {
                try await body.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                for piece in Self.pieces(for: model) {
                    try await body.write(Self.chunk(#"{"content":\#(JSONValue.string(piece).serialized())}"#))
                }
                if model.hasPrefix("block-"), ["-two", "-three", "-one"].contains(where: model.hasSuffix) {
                    // Keep going long after the phrase: only a cancelled request stops this early.
                    for index in 0..<300 {
                        try await body.write(Self.chunk(#"{"content":" tick\#(index)"}"#))
                        try await Task.sleep(for: .milliseconds(20))
                    }
                }
                try await body.write(Self.chunk("{}", finish: "stop"))
                try await body.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await body.finish(nil)
                server.publish("finished:\(model)")
            } catch {
                server.publish("cancelled:\(model)")
                throw error
            }
        }
    }
}
