import Foundation
import RelayCore
@testable import RelayGateway
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon as users meet it: the real `chatrelayd` binary on a temporary Unix socket,
/// called with curl, a raw socket and the official openai Python client, in front of the
/// project's cassettes and a loopback upstream.
@Suite("End to end through the Unix socket", .timeLimit(.minutes(2)))
struct GatewayEndToEndTests {
    static let question = #"[{"role":"system","content":"You are a helpful assistant"},{"role":"user","content":"Say hi in Portuguese"}]"#

    static func config(loopbackPort: Int, closedPort: Int) -> String {
        """
        server:
          socket: SOCKET
          max_request_body: 64KiB
        upstreams:
          - name: loop
            kind: openai-compatible
            base_url: http://127.0.0.1:\(loopbackPort)/v1
            api_key_env: LOOP_API_KEY
            idle_timeout: 3s
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
          - name: nowhere
            kind: openai-compatible
            base_url: http://127.0.0.1:\(closedPort)/v1
            connect_timeout: 1s             # bounds a connect that hangs (a refused one fails at once)
        models:
          - name: grok-4-fast
            upstream: recorded
            aliases: [grok]
          - name: gpt-4o-mini
            upstream: recorded
          - prefix: loop-
            upstream: loop
          - name: unreachable
            upstream: nowhere
        pipeline:
          - stage: passthrough
        """
    }

    /// Starts a loopback upstream and a daemon in front of it, runs `body`, stops both.
    static func withGateway(_ body: (GatewayProcess, LoopbackUpstream) async throws -> Void) async throws {
        let upstream = try await LoopbackUpstream.start()
        let gateway = try await GatewayProcess.start(
            config: self.config(loopbackPort: upstream.port, closedPort: try closedLoopbackPort()),
            environment: ["LOOP_API_KEY": "test-key-123"]
        )
        do {
            try await body(gateway, upstream)
        } catch {
            Issue.record("daemon log:\n\(gateway.log)")
            throw error
        }
        let status = try await gateway.stop()
        #expect(status == 0, "chatrelayd exited with \(status) after SIGTERM:\n\(gateway.log)")
        await upstream.stop()
    }

    static func chatBody(model: String, stream: Bool) -> String {
        #"{"model":"\#(model)","stream":\#(stream),"max_tokens":4000,"stream_options":{"include_usage":true},"messages":\#(question)}"#
    }

    @Test("the seed streams through the daemon event for event, with [DONE]")
    func streamsTheSeed() async throws {
        try await Self.withGateway { gateway, _ in
            let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.chatBody(model: "grok-4-fast", stream: true))
            #expect(response.status == 200)
            #expect(response.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            #expect(response.headers["x-request-id"]?.hasPrefix("req_") == true)
            let cassette = try Cassette(path: TestPaths.fixtureCassettes + "/seed-xai-grok-4-fast-keepalive.yaml")
            // Pass-through: the client gets the recorded bytes exactly.
            #expect(response.body == cassette.interactions[0].responseBody)
            let events = response.dataEvents
            #expect(events.count == 128)
            #expect(events.last == "[DONE]")
            #expect(events.filter { $0.contains(#""content":"Olá""#) }.count == 1)
        }
    }

    @Test("a non-streaming request gets one JSON object; an alias finds its model")
    func nonStreaming() async throws {
        try await Self.withGateway { gateway, _ in
            let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.chatBody(model: "grok", stream: false))
            #expect(response.status == 200)
            #expect(response.headers["content-type"]?.hasPrefix("application/json") == true)
            let json = try JSONValue(parsing: Array(response.body.utf8))
            #expect(json["object"]?.stringValue == "chat.completion")
            #expect(json["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue == "Olá!")
        }
    }

    @Test("an OpenAI-compatible upstream streams over real HTTP with the configured key")
    func openAICompatibleUpstream() async throws {
        try await Self.withGateway { gateway, upstream in
            let streamed = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.chatBody(model: "loop-seed", stream: true))
            #expect(streamed.status == 200)
            #expect(streamed.dataEvents.count == 128)
            #expect(streamed.dataEvents.last == "[DONE]")
            let whole = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.chatBody(model: "loop-json", stream: false))
            #expect(whole.status == 200)
            #expect(whole.body.contains(#""content":"Olá!""#))
            #expect(upstream.authorizations.allSatisfy { $0 == "Bearer test-key-123" })
            #expect(upstream.authorizations.count == 2)
            #expect(!gateway.log.contains("test-key-123"), "the API key must never reach the log")
        }
    }

    @Test("GET /v1/models and /healthz")
    func modelsAndHealth() async throws {
        try await Self.withGateway { gateway, _ in
            let models = try await curl(gateway.socketPath, "GET", "/v1/models")
            #expect(models.status == 200)
            let list = try JSONValue(parsing: Array(models.body.utf8))
            #expect(list["object"]?.stringValue == "list")
            let ids = list["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
            #expect(ids == ["grok-4-fast", "grok", "gpt-4o-mini", "unreachable"])
            #expect(list["data"]?.arrayValue?.first?["object"]?.stringValue == "model")

            let health = try await curl(gateway.socketPath, "GET", "/healthz")
            #expect(health.status == 200)
            let json = try JSONValue(parsing: Array(health.body.utf8))
            #expect(json["status"]?.stringValue == "ok")
            #expect(json["version"]?.stringValue != nil)
            #expect(json["uptime_seconds"]?.intValue != nil)
            #expect(json["active_streams"]?.intValue == 0)
        }
    }

    struct ErrorCase: Sendable, CustomTestStringConvertible {
        var name: String
        var method = "POST"
        var path = "/v1/chat/completions"
        var body: String?
        var status: Int
        var code: String?
        var testDescription: String { self.name }
    }

    static let errorCases: [ErrorCase] = [
        ErrorCase(name: "invalid JSON", body: #"{"model": "grok-4-fast", "messages": ["#, status: 400, code: "invalid_json"),
        ErrorCase(name: "not an object", body: "[1,2]", status: 400, code: "invalid_json"),
        ErrorCase(name: "missing model", body: #"{"messages":[{"role":"user","content":"hi"}]}"#, status: 400, code: "missing_model"),
        ErrorCase(name: "missing messages", body: #"{"model":"grok-4-fast"}"#, status: 400, code: "missing_messages"),
        ErrorCase(name: "unknown model", body: #"{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}"#, status: 404, code: "model_not_found"),
        ErrorCase(
            name: "body over the limit",
            body: #"{"model":"grok-4-fast","messages":[{"role":"user","content":""# + String(repeating: "x", count: 100_000) + #""}]}"#,
            status: 413,
            code: "request_too_large"
        ),
        ErrorCase(name: "no recording matches", body: #"{"model":"grok-4-fast","messages":[{"role":"user","content":"never asked"}]}"#, status: 404, code: "cassette_not_found"),
        ErrorCase(name: "unknown path", method: "GET", path: "/v1/embeddings", status: 404, code: "not_found"),
        ErrorCase(name: "wrong method", method: "GET", path: "/v1/chat/completions", status: 405, code: "method_not_allowed"),
        ErrorCase(name: "upstream unreachable", body: #"{"model":"unreachable","messages":[{"role":"user","content":"hi"}]}"#, status: 502, code: "upstream_unreachable"),
        ErrorCase(name: "upstream timeout", body: #"{"model":"loop-hang","stream":true,"messages":[{"role":"user","content":"hi"}]}"#, status: 504, code: "upstream_timeout"),
        ErrorCase(name: "upstream HTTP error passes through", body: #"{"model":"loop-429","stream":true,"messages":[{"role":"user","content":"hi"}]}"#, status: 429, code: "rate_limit_exceeded"),
    ]

    @Test("errors are OpenAI-shaped with the right status", arguments: errorCases)
    func errors(_ errorCase: ErrorCase) async throws {
        try await Self.withGateway { gateway, _ in
            let response = try await curl(gateway.socketPath, errorCase.method, errorCase.path, body: errorCase.body)
            #expect(response.status == errorCase.status, "\(response.body)")
            let json = try JSONValue(parsing: Array(response.body.utf8))
            let error = try #require(json["error"], "not an OpenAI error body: \(response.body)")
            #expect(error["message"]?.stringValue?.isEmpty == false)
            #expect(error["type"]?.stringValue != nil)
            #expect(error["code"]?.stringValue == errorCase.code)
            if errorCase.status == 405 { #expect(response.headers["allow"] == "POST") }
            if errorCase.status == 429 { #expect(response.headers["retry-after"] == "1") }
        }
    }

    @Test("a client that hangs up mid-stream cancels the upstream request")
    func clientHangUpCancelsUpstream() async throws {
        try await Self.withGateway { gateway, upstream in
            let request = RawUnixClient.post("/v1/chat/completions", json: Self.chatBody(model: "loop-slow", stream: true))
            let socket = gateway.socketPath
            let seen = try await onOwnThread { try RawUnixClient.readUntil("tick2 ", socketPath: socket, request: request) }
            #expect(seen.contains("200 OK"))
            // The socket is closed now; the upstream must see its request end long before its 60 s of ticks.
            #expect(await upstream.waitFor("cancelled:loop-slow"))
            // The request's log line counts what went out before the hang-up: at least the
            // events up to "tick2 " that the client read (it said 0 before).
            #expect(try await gateway.waitForLog("request ended (client disconnected)"))
            let line = gateway.log.split(separator: "\n").first { $0.contains("request ended (client disconnected)") } ?? ""
            let sent = line.split(separator: " ").first { $0.hasPrefix("events_sent=") }.flatMap { Int($0.dropFirst("events_sent=".count)) }
            #expect((sent ?? 0) >= 3, "\(line)")
            let health = try await curl(gateway.socketPath, "GET", "/healthz")
            #expect(health.status == 200)
        }
    }

    @Test("an upstream that dies mid-stream ends the client's stream with one error event and no [DONE]")
    func upstreamDiesMidStream() async throws {
        try await Self.withGateway { gateway, _ in
            let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.chatBody(model: "loop-die", stream: true))
            #expect(response.status == 200)
            let events = response.dataEvents
            #expect(events.filter { $0.contains(#""content":"Olá""#) }.count == 1)
            #expect(!events.contains("[DONE]"))
            let last = try JSONValue(parsing: Array((events.last ?? "").utf8))
            #expect(last["error"]?["type"]?.stringValue == "upstream_error")
            #expect(events.filter { $0.contains(#""error""#) }.count == 1)
        }
    }

    @Test("the socket gets its configured mode, and a second instance refuses a live socket")
    func socketModeAndSingleInstance() async throws {
        try await Self.withGateway { gateway, _ in
            var info = stat()
            #expect(stat(gateway.socketPath, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o660)
            let second = try await runProcess(TestPaths.chatrelayd, ["serve", "--config", gateway.directory + "/chatrelayd.yaml"])
            #expect(second.status != 0)
            #expect(second.standardError.contains("already listening"), "\(second.standardError)")
            let health = try await curl(gateway.socketPath, "GET", "/healthz")
            #expect(health.status == 200, "the first instance must keep its socket")
        }
    }

    @Test("the official openai Python client streams and completes over the socket")
    func openAIPythonClient() async throws {
        guard let python = TestPaths.venvPython else {
            if TestPaths.clientsRequired { Issue.record("the test venv with the openai package is missing (.venv); run scripts/setup") }
            return
        }
        try await Self.withGateway { gateway, _ in
            let result = try await runProcess(python, [TestPaths.repositoryRoot + "/Tests/clients/openai_client.py", gateway.socketPath, "grok-4-fast"])
            #expect(result.status == 0, "\(result.standardError)")
            let json = try JSONValue(parsing: Array(result.standardOutput.utf8))
            #expect(json["stream_text"]?.stringValue == "Olá!")
            #expect(json["stream_finish"]?.stringValue == "stop")
            #expect(json["stream_total_tokens"]?.intValue == 251)
            #expect(json["stream_chunks"]?.intValue == 127)
            #expect(json["text"]?.stringValue == "Olá!")
            #expect(json["models"] == ["gpt-4o-mini", "grok", "grok-4-fast", "unreachable"])
            #expect(json["unknown_model_error"]?["status"]?.intValue == 404)
            #expect(json["unknown_model_error"]?["code"]?.stringValue == "model_not_found")
        }
    }
}

/// A loopback TCP port with nothing listening on it.
func closedLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}
