import Foundation
import RelayCore
import Testing

/// The retry stage in front of a loopback upstream that fails on purpose: what the client
/// receives, how many attempts the upstream saw, what the usage record says. The client
/// never sees content twice.
@Suite("Retry, fallback and timeouts through the daemon", .timeLimit(.minutes(2)))
struct RetryEndToEndTests {
    static func config(loopbackPort: Int, closedPort: Int, ledger: String) -> String {
        """
        server:
          socket: SOCKET
          usage_ledger: \(ledger)
        upstreams:
          - name: loop
            kind: openai-compatible
            base_url: http://127.0.0.1:\(loopbackPort)/v1
            head_timeout: 3s              # generous: the suite runs many daemons at once
            idle_timeout: 3s
          - name: nowhere
            kind: openai-compatible
            base_url: http://127.0.0.1:\(closedPort)/v1
            connect_timeout: 1s             # bounds a connect that hangs (a refused one fails at once)
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
        models:
          - name: loop-503-always
            upstream: loop
            fallbacks:
              - upstream: recorded
                model: grok-4-fast
          - prefix: loop-
            upstream: loop
          - name: unreachable
            upstream: nowhere
        pipeline:
          - stage: usage
          - stage: retry
            attempts: 3
            base_delay: 10ms
            max_delay: 50ms
            max_retry_after: 2s
            deadline: 20s
        """
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var model: String
        var status: Int
        /// The `code` of the HTTP error, or of the stream's final error event.
        var errorCode: String?
        var attempts: Int
        /// Content the client must see exactly once.
        var content: [String] = []
        var done: Bool = false
        var testDescription: String { self.name }
    }

    static let cases: [Case] = [
        Case(name: "connection refused", model: "unreachable", status: 502, errorCode: "upstream_unreachable", attempts: 3),
        Case(name: "connection reset before the head", model: "loop-reset", status: 502, errorCode: "upstream_error", attempts: 3),
        Case(name: "429 with Retry-After: 1", model: "loop-429", status: 429, errorCode: "rate_limit_exceeded", attempts: 3),
        Case(name: "503 twice, then success", model: "loop-503x2-a", status: 200, attempts: 3, content: ["Olá", "!"], done: true),
        Case(name: "no head within head_timeout", model: "loop-hang", status: 504, errorCode: "upstream_timeout", attempts: 3),
        Case(name: "role chunk and keepalives, then reset", model: "loop-prefix-reset", status: 502, errorCode: "upstream_error", attempts: 3),
        Case(name: "content, then reset", model: "loop-die", status: 200, errorCode: "upstream_error", attempts: 1, content: ["Olá", "!"]),
        Case(name: "content, then silence past idle_timeout", model: "loop-stall", status: 200, errorCode: "upstream_timeout", attempts: 1, content: ["Olá"]),
        Case(name: "400 is never retried", model: "loop-400", status: 400, errorCode: "invalid_value", attempts: 1),
        Case(name: "fallback after the attempts are spent", model: "loop-503-always", status: 200, attempts: 4, content: ["Olá", "!"], done: true),
    ]

    @Test("failure cases", arguments: cases)
    func failureCase(_ testCase: Case) async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("retry")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, closedPort: try closedLoopbackPort(), ledger: ledger))
        let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: testCase.model, stream: true))
        #expect(response.status == testCase.status, "\(response.body.prefix(400))")
        let events = response.dataEvents
        if testCase.status == 200 {
            for text in testCase.content {
                #expect(events.filter { $0.contains(#""content":"\#(text)""#) }.count == 1, "'\(text)' exactly once")
            }
            #expect(events.contains("[DONE]") == testCase.done)
            if let code = testCase.errorCode {
                let last = try JSONValue(parsing: Array((events.last ?? "").utf8))
                #expect(last["error"]?["code"]?.stringValue == code, "\(events.last ?? "")")
                #expect(events.filter { $0.hasPrefix(#"{"error""#) }.count == 1)
            }
        } else {
            let body = try JSONValue(parsing: Array(response.body.utf8))
            #expect(body["error"]?["code"]?.stringValue == testCase.errorCode, "\(response.body)")
        }
        if testCase.model.hasPrefix("loop-") {
            #expect(upstream.count("request:\(testCase.model)") == min(testCase.attempts, 3), "upstream attempts")
        }
        #expect(try await gateway.stop() == 0)
        let record = try Self.ledgerRecord(ledger, requestID: response.headers["x-request-id"])
        #expect(record["attempts"]?.intValue == testCase.attempts, "attempts in the usage record")
        #expect(record["status"]?.intValue == testCase.status)
        if testCase.errorCode != nil, testCase.status == 200 {
            #expect(record["error"]?.stringValue != nil, "the record says the stream failed")
        }
        if testCase.model == "loop-503-always" {
            #expect(response.headers["x-chatrelay-upstream"] == "recorded")
            #expect(record["upstream"]?.stringValue == "recorded")
            #expect(record["served_model"]?.stringValue == "grok-4-fast-reasoning")
        }
    }

    @Test("a client that hangs up during a backoff wait stops the retries at once")
    func hangUpDuringBackoff() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("retry")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, closedPort: try closedLoopbackPort(), ledger: ledger))
        let socket = gateway.socketPath
        let request = RawUnixClient.post("/v1/chat/completions", json: GatewayEndToEndTests.chatBody(model: "loop-429", stream: true))
        // Send, wait for the first attempt to reach the upstream (which answers 429 with
        // Retry-After: 1 at once), hang up. (A reader that hung up after a fixed 0.4 s failed
        // once in eight loaded suite runs with three attempts and a client still there: on a
        // busy machine the hang-up is not bound to come before the retries end.)
        let client = try RawUnixClient.connect(socket)
        let bytes = Array(request.utf8)
        #expect(write(client, bytes, bytes.count) == bytes.count)
        #expect(await upstream.waitFor("request:loop-429"))
        close(client)
        // The request's record is written when its task ends; the ledger line is that event.
        let line = try await onOwnThread {
            for _ in 0..<300 {
                if let text = try? String(contentsOfFile: ledger, encoding: .utf8), !text.isEmpty { return text }
                usleep(10_000)
            }
            return ""
        }
        let record = try JSONValue(parsing: Array(line.utf8.prefix { $0 != 10 }))
        #expect(record["client_disconnected"]?.boolValue == true)
        #expect(record["attempts"]?.intValue == 1)
        #expect(upstream.count("request:loop-429") == 1, "no attempt after the client left")
        #expect(try await gateway.stop() == 0)
        #expect(upstream.count("request:loop-429") == 1)
    }

    static func ledgerRecord(_ path: String, requestID: String?) throws -> JSONValue {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        for line in lines {
            let record = try JSONValue(parsing: Array(line.utf8))
            if requestID == nil || record["request_id"]?.stringValue == requestID { return record }
        }
        throw GatewayProcessError("no ledger line for \(requestID ?? "-") in \(lines)")
    }
}
