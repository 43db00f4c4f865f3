import CoreMetrics
import Prometheus
import RelayCore

/// The gateway's Prometheus metrics, served on `GET /metrics`.
///
/// Made through swift-metrics with an explicit swift-prometheus factory, so nothing is
/// global: each gateway (and each test) has its own registry. Labels come from the
/// configuration (model route, upstream) and the status code, never from free client text,
/// so their number stays bounded.
final class GatewayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory

    init() {
        var factory = PrometheusMetricsFactory(registry: self.registry)
        let latencyBuckets: [Duration] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
            .seconds(60), .seconds(120), .seconds(300),
        ]
        factory.defaultDurationHistogramBuckets = latencyBuckets
        self.factory = factory
    }

    /// Counts one finished request.
    func record(_ record: UsageRecord, modelLabel: String) {
        let route = [("model", modelLabel), ("upstream", record.upstream.isEmpty ? "none" : record.upstream)]
        let status = route + [("status", String(record.status)), ("stream", String(record.stream))]
        Counter(label: "chatrelay_requests_total", dimensions: status, factory: self.factory).increment()
        let tokens: [(String, Int?)] = [
            ("prompt", record.tokens.prompt), ("completion", record.tokens.completion),
            ("reasoning", record.tokens.reasoning), ("cached_prompt", record.tokens.cachedPrompt),
        ]
        for (kind, count) in tokens {
            guard let count, count > 0 else { continue }
            Counter(label: "chatrelay_tokens_total", dimensions: route + [("kind", kind)], factory: self.factory).increment(by: count)
        }
        if let total = record.totalTime {
            Timer(label: "chatrelay_request_duration_seconds", dimensions: route, factory: self.factory).recordSeconds(total)
        }
        if let ttfb = record.timeToFirstByte {
            Timer(label: "chatrelay_time_to_first_byte_seconds", dimensions: route, factory: self.factory).recordSeconds(ttfb)
        }
        if let ttfc = record.timeToFirstContent {
            Timer(label: "chatrelay_time_to_first_content_seconds", dimensions: route, factory: self.factory).recordSeconds(ttfc)
        }
        if record.emptyChunksDropped > 0 {
            Counter(label: "chatrelay_empty_chunks_dropped_total", dimensions: route, factory: self.factory).increment(by: record.emptyChunksDropped)
        }
        if record.heartbeatsSent > 0 {
            Counter(label: "chatrelay_heartbeats_total", dimensions: route, factory: self.factory).increment(by: record.heartbeatsSent)
        }
        if record.clientDisconnected {
            Counter(label: "chatrelay_client_disconnects_total", dimensions: route, factory: self.factory).increment()
        }
    }

    /// The text exposition, with the gauges read at scrape time.
    func exposition(activeStreams: Int, generation: Int) -> [UInt8] {
        Gauge(label: "chatrelay_active_streams", factory: self.factory).record(activeStreams)
        Gauge(label: "chatrelay_config_generation", factory: self.factory).record(generation)
        return self.registry.emitToBuffer()
    }
}
