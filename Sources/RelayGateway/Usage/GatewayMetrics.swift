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
    /// Handles made once per route and kept: making one through the factory looks it up in
    /// the registry and boxes it (40,000 instructions for a request's metrics), and finding
    /// a kept one by its name and an array of labels hashed them all for every metric
    /// (27,000). A request now takes one lock, finds its route by two strings, and each
    /// metric by a small key.
    private let routes = Mutex<[Route: RouteHandles]>([:])

    /// A route's labels: the model route and the upstream.
    private struct Route: Hashable {
        var model: String
        var upstream: String
        var dimensions: [(String, String)] { [("model", self.model), ("upstream", self.upstream)] }
    }

    private struct RouteHandles {
        var counters: [CounterKey: CoreMetrics.Counter] = [:]
        var timers: [TimerKey: CoreMetrics.Timer] = [:]
    }

    /// A route's counters: name, and labels besides the route's.
    private enum CounterKey: Hashable {
        case requests(status: Int, stream: Bool)
        case tokens(kind: String)
        case emptyChunksDropped, heartbeats, clientDisconnects

        var label: String {
            switch self {
            case .requests: "chatrelay_requests_total"
            case .tokens: "chatrelay_tokens_total"
            case .emptyChunksDropped: "chatrelay_empty_chunks_dropped_total"
            case .heartbeats: "chatrelay_heartbeats_total"
            case .clientDisconnects: "chatrelay_client_disconnects_total"
            }
        }

        var dimensions: [(String, String)] {
            switch self {
            case .requests(let status, let stream): [("status", String(status)), ("stream", String(stream))]
            case .tokens(let kind): [("kind", kind)]
            case .emptyChunksDropped, .heartbeats, .clientDisconnects: []
            }
        }
    }

    /// A route's timers.
    private enum TimerKey: Hashable {
        case duration, firstByte, firstContent

        var label: String {
            switch self {
            case .duration: "chatrelay_request_duration_seconds"
            case .firstByte: "chatrelay_time_to_first_byte_seconds"
            case .firstContent: "chatrelay_time_to_first_content_seconds"
            }
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
        let route = Route(model: modelLabel, upstream: record.upstream.isEmpty ? "none" : record.upstream)
        let factory = self.factory
        self.routes.withLock { routes in
            var handles = routes[route] ?? RouteHandles()
            var made = false
            defer { if made { routes[route] = handles } }
            func counter(_ key: CounterKey) -> CoreMetrics.Counter {
                if let counter = handles.counters[key] { return counter }
                let counter = CoreMetrics.Counter(label: key.label, dimensions: route.dimensions + key.dimensions, factory: factory)
                handles.counters[key] = counter
                made = true
                return counter
            }
            func timer(_ key: TimerKey) -> CoreMetrics.Timer {
                if let timer = handles.timers[key] { return timer }
                let timer = CoreMetrics.Timer(label: key.label, dimensions: route.dimensions, factory: factory)
                handles.timers[key] = timer
                made = true
                return timer
            }
            counter(.requests(status: record.status, stream: record.stream)).increment()
            let tokens: [(String, Int?)] = [
                ("prompt", record.tokens.prompt), ("completion", record.tokens.completion),
                ("reasoning", record.tokens.reasoning), ("cached_prompt", record.tokens.cachedPrompt),
            ]
            for (kind, count) in tokens {
                guard let count, count > 0 else { continue }
                counter(.tokens(kind: kind)).increment(by: count)
            }
            if let total = record.totalTime { timer(.duration).recordSeconds(total) }
            if let ttfb = record.timeToFirstByte { timer(.firstByte).recordSeconds(ttfb) }
            if let ttfc = record.timeToFirstContent { timer(.firstContent).recordSeconds(ttfc) }
            if record.emptyChunksDropped > 0 { counter(.emptyChunksDropped).increment(by: record.emptyChunksDropped) }
            if record.heartbeatsSent > 0 { counter(.heartbeats).increment(by: record.heartbeatsSent) }
            if record.clientDisconnected { counter(.clientDisconnects).increment() }
        }
    }

    /// The text exposition, with the gauges read at scrape time.
    func exposition(activeStreams: Int, generation: Int) -> [UInt8] {
        Gauge(label: "chatrelay_active_streams", factory: self.factory).record(activeStreams)
        Gauge(label: "chatrelay_config_generation", factory: self.factory).record(generation)
        return self.registry.emitToBuffer()
    }
}
