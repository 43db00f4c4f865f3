@testable import RelayCore
@testable import RelayGateway
import Testing

/// The metrics of finished requests, read back from the exposition. Handles are kept per
/// route and found again by small keys (GatewayMetrics): a second request must count on the
/// same series, another status or route on a series of its own.
@Suite("Gateway metrics")
struct GatewayMetricsTests {
    static func finished(upstream: String, status: Int, prompt: Int? = nil, dropped: Int = 0) -> UsageRecord {
        var record = UsageRecord(requestID: "r", requestedModel: "m", upstream: upstream, stream: true, caller: nil)
        record.status = status
        record.tokens.prompt = prompt
        record.emptyChunksDropped = dropped
        record.totalTime = 0.01
        return record
    }

    @Test("Requests of one route count on one series; another status or route has its own")
    func seriesPerRouteAndStatus() {
        let metrics = GatewayMetrics()
        metrics.record(Self.finished(upstream: "a", status: 200, prompt: 3, dropped: 2), modelLabel: "fast")
        metrics.record(Self.finished(upstream: "a", status: 200, prompt: 4, dropped: 1), modelLabel: "fast")
        metrics.record(Self.finished(upstream: "a", status: 502), modelLabel: "fast")
        metrics.record(Self.finished(upstream: "", status: 200), modelLabel: "other")
        let text = String(decoding: metrics.exposition(activeStreams: 0, generation: 1), as: UTF8.self)
        #expect(text.contains(#"chatrelay_requests_total{model="fast",upstream="a",status="200",stream="true"} 2"#), "\(text)")
        #expect(text.contains(#"chatrelay_requests_total{model="fast",upstream="a",status="502",stream="true"} 1"#))
        #expect(text.contains(#"chatrelay_requests_total{model="other",upstream="none",status="200",stream="true"} 1"#))
        #expect(text.contains(#"chatrelay_tokens_total{model="fast",upstream="a",kind="prompt"} 7"#))
        #expect(text.contains(#"chatrelay_empty_chunks_dropped_total{model="fast",upstream="a"} 3"#))
        #expect(text.contains(#"chatrelay_request_duration_seconds_count{model="fast",upstream="a"} 3"#))
        #expect(!text.contains("chatrelay_client_disconnects_total"))
    }
}
