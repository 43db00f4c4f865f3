import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import RelayCore
@testable import RelayGateway
import ServiceLifecycle
import Synchronization

/// A stand-in provider on 127.0.0.1 that does, per request, what the test needs: replay a
/// recorded stream, trickle forever, die mid-stream, hang, or answer with an error.
///
/// The behaviour is chosen by the request's `model` (`loop-seed`, `loop-slow`, ...). Notable
/// moments (`request:MODEL`, `cancelled:MODEL`) are recorded so tests can await them
/// (``waitFor(_:timeout:)``) instead of sleeping.
final class LoopbackUpstream: Sendable {
    let port: Int
    private let server: Server<HTTP1Channel>
    private let runner: Task<Void, any Error>
    private let seenAuthorization = Mutex<[String]>([])

    /// The `Authorization` headers received so far.
    var authorizations: [String] { self.seenAuthorization.withLock { $0 } }

    static func start() async throws -> LoopbackUpstream {
        let (portStream, portSink) = AsyncStream<Int>.makeStream()
        let box = UpstreamBox()
        let server = Server(
            childChannelSetup: HTTP1Channel(responder: { request, writer, channel in
                try await box.upstream?.respond(request, writer: writer, channel: channel)
            }),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portSink.yield(channel.localAddress?.port ?? 0) },
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "loopback-upstream")
        )
        let runner = Task { try await server.run() }
        var ports = portStream.makeAsyncIterator()
        let port = await ports.next() ?? 0
        let upstream = LoopbackUpstream(port: port, server: server, runner: runner)
        box.upstream = upstream
        return upstream
    }

    private init(port: Int, server: Server<HTTP1Channel>, runner: Task<Void, any Error>) {
        self.port = port
        self.server = server
        self.runner = runner
    }

    /// Stops at once: cancelling the server's task closes its connections, hanging ones included.
    func stop() async {
        await stopServer(self.runner)
        let waiting = self.history.withLock { state in
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        waiting.forEach { $0.resume(returning: false) }
    }

    /// Waits until an event named `name` has happened (now or earlier); false if it has not
    /// after `timeout` (a test then fails instead of hanging the suite).
    func waitFor(_ name: String, timeout: Duration = .seconds(60)) async -> Bool {
        let id = UUID()
        return await withCheckedContinuation { continuation in
            let seen = self.history.withLock { state -> Bool in
                if state.seen.contains(name) { return true }
                state.waiters.append((id, name, continuation))
                return false
            }
            if seen { return continuation.resume(returning: true) }
            Task {
                try await Task.sleep(for: timeout)
                let expired = self.history.withLock { state in
                    state.waiters.firstIndex { $0.id == id }.map { state.waiters.remove(at: $0).continuation }
                }
                expired?.resume(returning: false)
            }
        }
    }

    /// Waits until `name` has happened `count` times; false after `timeout` seconds. For many
    /// requests at once, where one waiter per request would be clumsy.
    func waitFor(_ name: String, count: Int, timeout: Duration = .seconds(60)) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while self.count(name) < count {
            guard clock.now < deadline else { return false }
            // Polls the history; the events come from this process, so 10 ms costs nothing.
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// How many times `name` has happened so far.
    func count(_ name: String) -> Int {
        self.history.withLock { $0.seen.filter { $0 == name }.count }
    }

    private let history = Mutex<(seen: [String], waiters: [(id: UUID, name: String, continuation: CheckedContinuation<Bool, Never>)])>(([], []))

    private func publish(_ event: String) {
        let ready = self.history.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.seen.append(event)
            let matching = state.waiters.filter { $0.name == event }.map(\.continuation)
            state.waiters.removeAll { $0.name == event }
            return matching
        }
        ready.forEach { $0.resume(returning: true) }
    }

    /// Ends the connection mid-body after what was written: our side first (a FIN after the
    /// data), then all of it once the gateway has hung up. A plain close could reach the
    /// gateway as a reset, and a reset makes the kernel drop what the gateway had not read
    /// yet: on a loaded machine the test then saw 502 instead of the content, then the error.
    static func die(_ channel: any Channel) async throws {
        try await channel.close(mode: .output)
        try? await channel.closeFuture.get()
    }

    private func respond(_ request: Request, writer: consuming ResponseWriter, channel: any Channel) async throws {
        var request = request
        let body = try await request.collectBody(upTo: 1 << 20)
        let json = try? JSONValue(parsing: body.readableBytesView)
        let model = json?["model"]?.stringValue ?? "?"
        if let authorization = request.headers[.authorization] {
            self.seenAuthorization.withLock { $0.append(authorization) }
        }
        self.publish("request:\(model)")
        if model.hasPrefix("loop-503x2-"), self.count("request:\(model)") <= 2 {
            // Fails twice, then behaves like loop-seed.
            try await Self.writeError(status: .serviceUnavailable, code: "overloaded", to: writer)
            return
        }
        if model.hasPrefix("loop-503x2-") || model.hasPrefix("loop-seed-as-") {
            try await Self.writeSeed(to: writer, gap: nil)
            return
        }
        switch model {
        case "loop-503-always":
            try await Self.writeError(status: .serviceUnavailable, code: "overloaded", to: writer)
        case "loop-400":
            try await Self.writeError(status: .badRequest, code: "invalid_value", to: writer)
        case "loop-reset":
            // Read the request, then drop the connection without a word.
            try await channel.close()
        case "loop-prefix-reset":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
            for _ in 0..<3 { try await bodyWriter.write(Self.chunk("{}")) }
            try await Self.die(channel)
        case "loop-stall":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
            try await bodyWriter.write(Self.chunk(#"{"content":"Olá"}"#))
            do {
                try await Task.sleep(for: .seconds(20))
            } catch {
                self.publish("cancelled:\(model)")
            }
            try await bodyWriter.finish(nil)
        case "loop-seed":
            try await Self.writeSeed(to: writer, gap: nil)
        case "loop-seed-slow":
            // The seed again, 10 ms between events: a stream that lasts about 1.3 s (longer on a
            // loaded machine; the drain test gives it 12 s).
            try await Self.writeSeed(to: writer, gap: .milliseconds(10))
        case "loop-firehose":
            // Content as fast as it can be taken, for up to 30 s: a stream that never pauses.
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            let clock = ContinuousClock()
            let giveUp = clock.now.advanced(by: .seconds(30))
            do {
                try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                let piece = Self.chunk(#"{"content":"\#(String(repeating: "x", count: 400))"}"#)
                var written = 0
                while clock.now < giveUp {
                    try await bodyWriter.write(piece)
                    written += 1
                    // A write to a socket with room returns without suspending: yield, or a
                    // few of these loops would hold every thread of this process's pool.
                    await Task.yield()
                    // And wait now and then until the event loop has done the writes queued
                    // so far. A loop runs the tasks queued on it until there are none left
                    // before it polls its sockets; against a daemon that reads as fast as
                    // they come, three firehoses queueing writes kept both loops from reading
                    // the fourth stream's request for a minute.
                    if written % 8 == 0 { try await channel.eventLoop.submit {}.get() }
                }
                try await bodyWriter.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await bodyWriter.finish(nil)
                self.publish("finished:\(model)")
            } catch {
                self.publish("cancelled:\(model)")
                throw error
            }
        case "loop-short-paced", "loop-long-paced":
            // Light streams for hundreds at once: a chunk every 300 ms, 12 of them (about 4 s,
            // within a drain time) or up to 200 (a minute, cut by it).
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            do {
                try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                for index in 0..<(model == "loop-short-paced" ? 12 : 200) {
                    try await Task.sleep(for: .milliseconds(300))
                    try await bodyWriter.write(Self.chunk(#"{"content":"part\#(index) "}"#))
                }
                try await bodyWriter.write(Self.chunk("{}", finish: "stop"))
                try await bodyWriter.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await bodyWriter.finish(nil)
                self.publish("finished:\(model)")
            } catch {
                self.publish("cancelled:\(model)")
                throw error
            }
        case "loop-json":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "application/json"
            let answer = #"{"id":"chatcmpl-loop","object":"chat.completion","created":1,"model":"loop-json-v1","choices":[{"index":0,"message":{"role":"assistant","content":"Olá!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#
            try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: answer)))
        case "loop-slow":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            do {
                try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                for index in 0..<3000 {
                    try await bodyWriter.write(Self.chunk(#"{"content":"tick\#(index) "}"#))
                    try await Task.sleep(for: .milliseconds(20))
                }
                try await bodyWriter.finish(nil)
            } catch {
                self.publish("cancelled:\(model)")
                throw error
            }
        case "loop-big":
            // 2 MB in 500 events as fast as they can be taken: more than the socket buffers
            // between the daemon and a client that does not read (about 0.5 MB), and not
            // much more, since this server and the daemon share the machine with every
            // other test.
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            let filler = String(repeating: "x", count: 4000)
            do {
                try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
                for _ in 0..<500 { try await bodyWriter.write(Self.chunk(#"{"content":"\#(filler)"}"#)) }
                try await bodyWriter.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await bodyWriter.finish(nil)
                self.publish("finished:\(model)")
            } catch {
                self.publish("cancelled:\(model)")
                throw error
            }
        case "loop-die":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
            try await bodyWriter.write(Self.chunk(#"{"content":"Olá"}"#))
            try await bodyWriter.write(Self.chunk(#"{"content":"!"}"#))
            // Die without ending the chunked body, the way a crashed provider connection looks.
            try await Self.die(channel)
        case "loop-429":
            var head = HTTPResponse(status: .tooManyRequests)
            head.headerFields[.contentType] = "application/json"
            head.headerFields[.retryAfter] = "1"
            let answer = #"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#
            try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: answer)))
        case "loop-hang":
            do {
                try await Task.sleep(for: .seconds(20))
            } catch {
                self.publish("cancelled:\(model)")
            }
            try await writer.writeResponse(HTTPResponse(status: .gatewayTimeout))
        case "loop-huge-event", "loop-endless-line", "loop-comment-flood", "loop-comment-lines":
            try await self.writeUntrusted(model, to: writer, channel: channel)
        case "loop-bad-utf8", "loop-deep-json":
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/event-stream"
            var bodyWriter = try await writer.writeHead(head)
            try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
            try await bodyWriter.write(model == "loop-bad-utf8" ? Self.invalidUTF8Chunk : Self.deeplyNestedChunk)
            try await bodyWriter.write(Self.chunk(#"{"content":"Olá"}"#, finish: "stop"))
            try await bodyWriter.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await bodyWriter.finish(nil)
        default:
            try await writer.writeResponse(HTTPResponse(status: .notFound))
        }
    }

    /// The most a misbehaving stream sends before giving up by itself (only if the daemon
    /// failed to stop reading it): 256 MB.
    static let untrustedCap = 256 << 20

    /// Streams that never end on their own, each after a role chunk and `Olá`:
    /// - `loop-huge-event`: one event of 1 KB `data:` lines that never gets its blank line;
    /// - `loop-endless-line`: one `data:` line that never gets its newline;
    /// - `loop-comment-flood`: `: x` comment blocks, each ended, 10,000 a second;
    /// - `loop-comment-lines`: `: x` comment lines with no blank line, forever.
    /// They go on until the daemon hangs up (`cancelled:MODEL`), or give up after
    /// ``untrustedCap`` bytes or 15 s and end the body (`finished:MODEL`).
    private func writeUntrusted(_ model: String, to writer: consuming ResponseWriter, channel: any Channel) async throws {
        var head = HTTPResponse(status: .ok)
        head.headerFields[.contentType] = "text/event-stream"
        var bodyWriter = try await writer.writeHead(head)
        let piece: ByteBuffer
        switch model {
        case "loop-huge-event": piece = ByteBuffer(string: String(repeating: "data: " + String(repeating: "x", count: 1018) + "\n", count: 64))
        case "loop-endless-line": piece = ByteBuffer(string: String(repeating: "x", count: 65536))
        case "loop-comment-flood": piece = ByteBuffer(string: String(repeating: ": x\n\n", count: 100))
        default: piece = ByteBuffer(string: String(repeating: ": x\n", count: 16384))
        }
        do {
            try await bodyWriter.write(Self.chunk(#"{"role":"assistant","content":""}"#))
            try await bodyWriter.write(Self.chunk(#"{"content":"Olá"}"#))
            if model == "loop-endless-line" { try await bodyWriter.write(ByteBuffer(string: #"data: {"choices":[{"index":0,"delta":{"content":""#)) }
            var sent = 0
            let clock = ContinuousClock()
            let giveUp = clock.now.advanced(by: .seconds(15))
            while sent < Self.untrustedCap, clock.now < giveUp {
                try await bodyWriter.write(piece)
                // The writer only suspends once the channel has told it that it is full, which
                // takes a trip through the event loop: without waiting for that trip, this loop
                // handed the writer 20 to 140 MB in 0.2 s, and on a loaded machine reached
                // `untrustedCap` ("finished") before the daemon's hang-up had arrived.
                try await channel.eventLoop.submit {}.get()
                sent += piece.readableBytes
                // The comment flood is paced (10,000 blocks a second), so that the daemon
                // keeps up: only then do its bytes keep the transport's idle timer from firing.
                if model == "loop-comment-flood" { try await Task.sleep(for: .milliseconds(10)) }
            }
            try await bodyWriter.finish(nil)
            self.publish("finished:\(model)")
        } catch {
            self.publish("cancelled:\(model)")
            throw error
        }
    }

    /// A content chunk whose text holds bytes that are not UTF-8 (a lone continuation byte, 0xFF).
    static let invalidUTF8Chunk: ByteBuffer = {
        var buffer = ByteBuffer(string: #"data: {"id":"chatcmpl-loop","object":"chat.completion.chunk","created":1,"model":"loop-v1","choices":[{"index":0,"delta":{"content":"bad "#)
        buffer.writeBytes([0x80, 0xFF, 0xC3])
        buffer.writeString(#""}}]}"# + "\n\n")
        return buffer
    }()

    /// A chunk with an extra field nested 20,000 arrays deep (40 KB, under the test's 64 KiB events): far past the JSON parser's limit of 512 levels.
    static let deeplyNestedChunk = ByteBuffer(
        string: #"data: {"id":"chatcmpl-loop","object":"chat.completion.chunk","created":1,"model":"loop-v1","choices":[{"index":0,"delta":{"content":"deep "}}],"x":"#
            + String(repeating: "[", count: 20_000) + String(repeating: "]", count: 20_000) + "}\n\n"
    )

    static func writeError(status: HTTPResponse.Status, code: String, to writer: consuming ResponseWriter) async throws {
        var head = HTTPResponse(status: status)
        head.headerFields[.contentType] = "application/json"
        let answer = #"{"error":{"message":"loopback says \#(status.code)","type":"upstream","code":"\#(code)"}}"#
        try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(string: answer)))
    }

    static func writeSeed(to writer: consuming ResponseWriter, gap: Duration?) async throws {
        let cassette = try Cassette(path: TestPaths.fixtureCassettes + "/seed-xai-grok-4-fast-keepalive.yaml")
        var head = HTTPResponse(status: .ok)
        head.headerFields[.contentType] = "text/event-stream"
        var bodyWriter = try await writer.writeHead(head)
        for piece in CassetteUpstream.eventPieces(of: ByteBuffer(string: cassette.interactions[0].responseBody)) {
            try await bodyWriter.write(piece)
            if let gap { try await Task.sleep(for: gap) }
        }
        try await bodyWriter.finish(nil)
    }

    static func chunk(_ delta: String, finish: String? = nil) -> ByteBuffer {
        let reason = finish.map { #","finish_reason":"\#($0)""# } ?? ""
        return ByteBuffer(string: #"data: {"id":"chatcmpl-loop","object":"chat.completion.chunk","created":1,"model":"loop-v1","choices":[{"index":0,"delta":\#(delta)\#(reason)}]}"# + "\n\n")
    }
}

private final class UpstreamBox: @unchecked Sendable {
    var upstream: LoopbackUpstream?
}
