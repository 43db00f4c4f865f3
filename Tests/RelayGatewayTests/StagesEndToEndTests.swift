import Foundation
import RelayCore
@testable import RelayGateway
import Testing

/// The default pipeline (keepalive and usage) through the real daemon: what the client
/// sees of the seed, heartbeats while a paced replay is silent, the usage record in the
/// ledger, and `/metrics`.
@Suite("Keepalive and usage through the daemon", .timeLimit(.minutes(1)))
struct StagesEndToEndTests {
    static func config(ledger: String) -> String {
        """
        server:
          socket: SOCKET
          usage_ledger: \(ledger)
        upstreams:
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
          - name: paced
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
            pace: 3s
        models:
          - name: grok-4-fast
            upstream: recorded
          - name: grok-paced
            upstream: paced
            upstream_model: grok-4-fast
        pipeline:
          - stage: keepalive
            interval: 500ms
          - stage: usage
        """
    }

    static func withGateway(_ body: (GatewayProcess, String) async throws -> Void) async throws {
        let directory = try TestPaths.temporaryDirectory("stages")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(ledger: ledger))
        do {
            try await body(gateway, ledger)
        } catch {
            Issue.record("daemon log:\n\(gateway.log)")
            throw error
        }
        #expect(try await gateway.stop() == 0)
    }

    @Test("the seed reaches the client as role, \"Olá\", \"!\", finish, usage, [DONE]; the ledger and /metrics count it")
    func seedThroughDefaultPipeline() async throws {
        try await Self.withGateway { gateway, ledger in
            let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: "grok-4-fast", stream: true))
            #expect(response.status == 200)
            let events = response.dataEvents
            try #require(events.count == 6, "\(response.body)")
            #expect(events[0].contains(#""delta":{"role":"assistant"}"#))
            #expect(events[1].contains(#""delta":{"content":"Olá"}"#))
            #expect(events[2].contains(#""delta":{"content":"!"}"#))
            #expect(events[3].contains(#""finish_reason":"stop""#))
            #expect(events[4].contains(#""choices":[],"usage""#))
            #expect(events[5] == "[DONE]")
            // Heartbeats only appear here if a loaded machine stalls the replay for 500 ms.
            let heartbeats = response.body.components(separatedBy: "\n\n").filter { $0 == ": keepalive" }.count

            let records = try ledgerRecords(ledger)
            try #require(records.count == 1)
            let record = records[0]
            #expect(record["model"]?.stringValue == "grok-4-fast")
            #expect(record["served_model"]?.stringValue == "grok-4-fast-reasoning")
            #expect(record["status"]?.intValue == 200)
            #expect(record["finish_reason"]?.stringValue == "stop")
            #expect(record["tokens"]?["prompt"]?.intValue == 126)
            #expect(record["tokens"]?["completion"]?.intValue == 2)
            #expect(record["tokens"]?["reasoning"]?.intValue == 123)
            #expect(record["tokens"]?["total"]?.intValue == 251)
            #expect(record["empty_chunks_dropped"]?.intValue == 122)
            #expect(record["events_received"]?.intValue == 128)
            #expect(record["events_sent"]?.intValue == 6 + heartbeats)
            #expect(record["heartbeats_sent"]?.intValue == heartbeats)
            #expect(record["caller"]?["uid"]?.intValue == Int(getuid()))

            let metrics = try await curl(gateway.socketPath, "GET", "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.body.contains(#"chatrelay_requests_total{model="grok-4-fast",upstream="recorded",status="200",stream="true"} 1"#), "\(metrics.body)")
            #expect(metrics.body.contains(#"chatrelay_tokens_total{model="grok-4-fast",upstream="recorded",kind="reasoning"} 123"#))
            #expect(metrics.body.contains(#"chatrelay_empty_chunks_dropped_total{model="grok-4-fast",upstream="recorded"} 122"#))
            #expect(metrics.body.contains("chatrelay_time_to_first_content_seconds_bucket"))
            #expect(metrics.body.contains("chatrelay_active_streams 0"))
        }
    }

    @Test("a paced replay: heartbeats at the interval while the upstream only sends empty chunks, nothing else added")
    func heartbeatsWhilePaced() async throws {
        try await Self.withGateway { gateway, ledger in
            let started = ContinuousClock.now
            let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: "grok-paced", stream: true))
            let elapsed = started.duration(to: .now)
            #expect(response.status == 200)
            #expect(response.dataEvents.count == 6)
            let blocks = response.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            let heartbeats = blocks.filter { $0 == ": keepalive" }.count
            // 122 empty chunks spread over at least 2.9 s before "Olá": one heartbeat per 500 ms
            // of it (a loaded machine stretches the replay, so the bound follows the clock).
            let most = Int(elapsed / .milliseconds(500)) + 1
            #expect(heartbeats >= 3 && heartbeats <= most, "\(heartbeats) heartbeats in \(elapsed): \(blocks)")
            #expect(blocks.allSatisfy { $0 == ": keepalive" || $0.hasPrefix("data: ") })
            let firstContent = try #require(blocks.firstIndex { $0.contains(#""content":"Olá""#) })
            #expect(blocks[..<firstContent].dropFirst().allSatisfy { $0 == ": keepalive" }, "only heartbeats between the role chunk and the text")
            let record = try #require(try ledgerRecords(ledger).first)
            #expect(record["heartbeats_sent"]?.intValue == heartbeats)
        }
    }

    @Test("a live upstream gone silent after content: heartbeats at the interval from the client's own task, then its idle timeout")
    func heartbeatsWhileLiveUpstreamIsSilent() async throws {
        // An HTTP upstream's body waits with deadlines, so the keepalive stage relays it with
        // no pump task (a cassette's does not: the test above covers that path).
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("stages-live")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: """
            server:
              socket: SOCKET
              usage_ledger: \(ledger)
            upstreams:
              - name: loop
                kind: openai-compatible
                base_url: http://127.0.0.1:\(upstream.port)/v1
                idle_timeout: 1500ms
            models:
              - prefix: loop-
                upstream: loop
            pipeline:
              - stage: keepalive
                interval: 200ms
              - stage: usage
            """)
        let started = ContinuousClock.now
        let response = try await curl(gateway.socketPath, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: "loop-stall", stream: true))
        let elapsed = started.duration(to: .now)
        #expect(response.status == 200)
        let blocks = response.body.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        let content = try #require(blocks.firstIndex { $0.contains(#""content":"Olá""#) })
        let heartbeats = blocks[(content + 1)...].prefix { $0 == ": keepalive" }.count
        // 1.5 s of silence at 200 ms: about 7 (a loaded machine stretches it; the bound follows the clock).
        #expect(heartbeats >= 3 && heartbeats <= Int(elapsed / .milliseconds(200)) + 1, "\(heartbeats) heartbeats in \(elapsed): \(blocks)")
        #expect(blocks.count == content + 1 + heartbeats + 1, "after the heartbeats, only the error event: \(blocks)")
        #expect(blocks.last?.contains("upstream_timeout") == true, "\(blocks)")
        #expect(try await gateway.stop() == 0)
        let record = try #require(try ledgerRecords(ledger).first)
        #expect(record["heartbeats_sent"]?.intValue == heartbeats)
    }
}
