import Foundation
import RelayCore
import Testing

/// No API key, credential or `Authorization` value ever leaves the daemon except towards
/// its upstream: after traffic of every kind with a known key, none of the places an
/// operator or a client can read holds it. And client-supplied strings cannot forge log lines.
@Suite("Secrets and logs", .timeLimit(.minutes(2)))
struct SecretsTests {
    static let key = "sk-KNOWN-upstream-key-7f3a9c"
    static let clientSecret = "sk-CLIENT-secret-b81e"

    @Test("After successes, errors and a client's own Authorization header, no key is in the log, ledger, metrics, or any response")
    func noKeyAnywhere() async throws {
        let upstream = try await LoopbackUpstream.start()
        let directory = try TestPaths.temporaryDirectory("secrets")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let config = """
            server:
              socket: SOCKET
              usage_ledger: \(ledger)
            upstreams:
              - name: loop
                kind: openai-compatible
                base_url: http://127.0.0.1:\(upstream.port)/v1
                api_key_env: SECRETS_TEST_KEY
                head_timeout: 1s
                idle_timeout: 1s
            models:
              - prefix: loop-
                upstream: loop
            pipeline:
              - stage: usage
              - stage: retry
                attempts: 2
                base_delay: 10ms
                max_delay: 10ms
            """
        let gateway = try await GatewayProcess.start(config: config, environment: ["SECRETS_TEST_KEY": Self.key])
        let socket = gateway.socketPath
        var seen: [String] = []
        let authorization = ["-H", "Authorization: Bearer \(Self.clientSecret)"]
        for model in ["loop-seed", "loop-json", "loop-400", "loop-429", "loop-die", "loop-hang", "loop-reset", "missing-model"] {
            for stream in [true, false] {
                let response = try await curl(socket, "POST", "/v1/chat/completions",
                    body: GatewayEndToEndTests.chatBody(model: model, stream: stream), extra: authorization)
                seen.append(response.headers.map { "\($0.key): \($0.value)" }.joined(separator: "\n") + "\n" + response.body)
            }
        }
        seen.append(try await curl(socket, "POST", "/v1/chat/completions", body: "{not json", extra: authorization).body)
        seen.append(try await curl(socket, "GET", "/v1/models", extra: authorization).body)
        seen.append(try await curl(socket, "GET", "/metrics").body)
        seen.append(try await curl(socket, "GET", "/healthz").body)
        #expect(try await gateway.stop() == 0)
        await upstream.stop()

        // The key did go where it belongs, and only as the daemon's own.
        #expect(upstream.authorizations.contains("Bearer \(Self.key)"))
        #expect(!upstream.authorizations.contains { $0.contains(Self.clientSecret) }, "a client's credential is not forwarded")

        seen.append(gateway.log)
        seen.append((try? String(contentsOfFile: ledger, encoding: .utf8)) ?? "")
        #expect(seen.last?.isEmpty == false, "the ledger was written")
        for (index, text) in seen.enumerated() {
            #expect(!text.contains(Self.key), "place \(index) holds the upstream key: \(text.prefix(300))")
            #expect(!text.contains(Self.clientSecret), "place \(index) holds the client's credential: \(text.prefix(300))")
            #expect(!text.contains("Bearer"), "place \(index) holds an Authorization value: \(text.prefix(300))")
        }
    }

    @Test("A model name with line breaks cannot forge a log line")
    func noForgedLines() async throws {
        let gateway = try await GatewayProcess.start(config: """
            server:
              socket: SOCKET
            upstreams:
              - name: recorded
                kind: cassette
                cassettes: [\(TestPaths.fixtureCassettes)]
            models:
              - name: grok-4-fast
                upstream: recorded
            """)
        let forged = "2026-01-01T00:00:00+0000 critical chatrelayd: FORGED"
        let body = (["model": .string("x\n\(forged)\r\n\(forged)"), "messages": [["role": "user", "content": "hi"]]] as JSONValue).serialized()
        let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: body)
        #expect(response.status == 404)
        #expect(try await gateway.stop() == 0)
        #expect(gateway.log.contains("FORGED"), "the request is logged, with the name made harmless")
        let lines = gateway.log.split(whereSeparator: \.isNewline)
        #expect(!lines.contains { $0.hasPrefix(forged) }, "\(gateway.log)")
    }
}
