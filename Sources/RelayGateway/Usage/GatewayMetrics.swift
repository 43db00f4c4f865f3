import CoreMetrics
import Prometheus
import RelayCore
import Synchronization

/// The gateway's Prometheus metrics, served on `GET /metrics`.
///
/// Made through swift-metrics with an explicit swift-prometheus factory, so nothing is
/// global: each gateway (and each test) has its own registry. Labels come from the
/// configuration (model route, upstream) and the status code, never from free client text,
/// so their number stays bounded.
final class GatewayMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// Handles made once per name and labels. Making one through the factory looks it up in
    /// the registry and boxes it: 40,000 instructions for a request's metrics (callgrind).
    private let counters = Mutex<[MetricID: CoreMetrics.Counter]>([:])
    private let timers = Mutex<[MetricID: CoreMetrics.Timer]>([:])

    /// A metric as the registry knows it: its name and its labels.
    private struct MetricID: Hashable {
        var label: String
        var dimensions: [String]

        init(_ label: String, _ dimensions: [(String, String)]) {
            self.label = label
            self.dimensions = dimensions.flatMap { [$0.0, $0.1] }
        }
    }

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
        self.counter("chatrelay_requests_total", status).increment()
        let tokens: [(String, Int?)] = [
            ("prompt", record.tokens.prompt), ("completion", record.tokens.completion),
            ("reasoning", record.tokens.reasoning), ("cached_prompt", record.tokens.cachedPrompt),
        ]
        for (kind, count) in tokens {
            guard let count, count > 0 else { continue }
            self.counter("chatrelay_tokens_total", route + [("kind", kind)]).increment(by: count)
        }
        if let total = record.totalTime {
            self.timer("chatrelay_request_duration_seconds", route).recordSeconds(total)
        }
        if let ttfb = record.timeToFirstByte {
            self.timer("chatrelay_time_to_first_byte_seconds", route).recordSeconds(ttfb)
        }
        if let ttfc = record.timeToFirstContent {
            self.timer("chatrelay_time_to_first_content_seconds", route).recordSeconds(ttfc)
        }
        if record.emptyChunksDropped > 0 {
            self.counter("chatrelay_empty_chunks_dropped_total", route).increment(by: record.emptyChunksDropped)
        }
        if record.heartbeatsSent > 0 {
            self.counter("chatrelay_heartbeats_total", route).increment(by: record.heartbeatsSent)
        }
        if record.clientDisconnected {
            self.counter("chatrelay_client_disconnects_total", route).increment()
        }
    }

    private func counter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Counter {
        Self.handle(in: self.counters, MetricID(label, dimensions)) {
            CoreMetrics.Counter(label: label, dimensions: dimensions, factory: self.factory)
        }
    }

    private func timer(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        Self.handle(in: self.timers, MetricID(label, dimensions)) {
            CoreMetrics.Timer(label: label, dimensions: dimensions, factory: self.factory)
        }
    }

    /// The handle kept for `id`, made with `make` the first time. Made outside the lock; two
    /// threads that race make handles of the same metric.
    private static func handle<Handle: Sendable>(
        in cache: borrowing Mutex<[MetricID: Handle]>,
        _ id: MetricID,
        make: () -> Handle
    ) -> Handle {
        if let handle = cache.withLock({ $0[id] }) { return handle }
        let handle = make()
        cache.withLock { $0[id] = handle }
        return handle
    }

    /// The text exposition, with the gauges read at scrape time.
    func exposition(activeStreams: Int, generation: Int) -> [UInt8] {
        Gauge(label: "chatrelay_active_streams", factory: self.factory).record(activeStreams)
        Gauge(label: "chatrelay_config_generation", factory: self.factory).record(generation)
        return self.registry.emitToBuffer()
    }
}
