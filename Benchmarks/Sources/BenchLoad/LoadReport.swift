import Foundation
/// The result of one run, as written to `--json` (keys in snake case) and summed up on stdout.
struct LoadReport: Codable, Sendable {
    /// p50, p90 and p99 in milliseconds; nil when nothing was measured.
    struct Percentiles: Codable, Sendable {
        var p50: Double?
        var p90: Double?
        var p99: Double?
        var max: Double?

        init(_ histogram: LatencyHistogram) {
            func milliseconds(_ micros: Double?) -> Double? { micros.map { ($0 / 1000 * 1000).rounded() / 1000 } }
            self.p50 = milliseconds(histogram.percentile(0.50))
            self.p90 = milliseconds(histogram.percentile(0.90))
            self.p99 = milliseconds(histogram.percentile(0.99))
            self.max = histogram.count > 0 ? milliseconds(Double(histogram.maximum)) : nil
        }
    }

    /// CPU and memory of a set of processes over the run.
    struct ProcessUsage: Codable, Sendable {
        var pids: [Int32]
        var cpuSeconds: Double
        /// Of `cpuSeconds`, the kernel's part (`stime`): system calls, the network stack, and
        /// switching threads. Apart, because a change to the relay's own code moves only the rest.
        var systemCpuSeconds: Double?
        /// CPU per `data:` event the client received: the relay's cost per relayed chunk.
        var cpuMicrosecondsPerChunk: Double?
        /// The same per thousand chunks, in milliseconds (the unit).
        var cpuMillisecondsPerThousandChunks: Double?
        /// CPU per content chunk, which differs from the above when a flood of empty chunks is dropped.
        var cpuMicrosecondsPerContentChunk: Double?
        /// Share of one core over the run.
        var cpuCoreShare: Double
        var rssBeforeMB: Double
        var rssAfterMB: Double
        var peakRssMB: Double
        /// Proportional set size at the end (shared pages split among the pids).
        var pssAfterMB: Double?
        /// Whether the peak was reset at the start, so that it is this run's own.
        var peakRssReset: Bool
    }

    var label: String?
    var endpoint: String
    var model: String
    var concurrency: Int
    /// Whether each request asked for a new connection (`--connection-close`).
    var connectionClose: Bool
    var durationSeconds: Double?
    var requestsPerWorker: Int?
    var elapsedSeconds: Double
    var requestsCompleted: Int
    var errors: Int
    var errorKinds: [String: Int]
    var connectionsOpened: Int
    var connectRetries: Int
    /// Requests sent again because the server had closed the kept-alive connection under them.
    var staleConnectionRetries: Int
    /// Responses after which the server closed the connection without `Connection: close`.
    var unannouncedCloses: Int
    var dataEvents: Int
    var contentChunks: Int
    var heartbeats: Int
    var responseBytes: Int
    /// Content chunks per successful response: the same min and max through every relay, or
    /// a relay lost or split chunks.
    var contentChunksPerRequestMin: Int?
    var contentChunksPerRequestMax: Int?
    var requestsPerSecond: Double
    var chunksPerSecond: Double
    var dataEventsPerSecond: Double
    var ttfbMs: Percentiles
    var ttfcMs: Percentiles
    var gapMs: Percentiles
    var relay: ProcessUsage?
    var upstream: ProcessUsage?
    var loadGeneratorCpuSeconds: Double

    /// A few lines for a person at a terminal.
    var summary: String {
        func number(_ value: Double?, _ digits: Int = 2) -> String {
            guard let value else { return "-" }
            return String(format: "%.\(digits)f", value)
        }
        var lines = [
            "\(self.label ?? self.endpoint) model \(self.model), concurrency \(self.concurrency), \(number(self.elapsedSeconds)) s",
            "  requests \(self.requestsCompleted) (\(number(self.requestsPerSecond, 1))/s), errors \(self.errors)"
                + (self.errorKinds.isEmpty ? "" : " \(self.errorKinds)")
                + "; connections \(self.connectionsOpened), unannounced closes \(self.unannouncedCloses), "
                + "stale-connection retries \(self.staleConnectionRetries), connect retries \(self.connectRetries)",
            "  content chunks \(self.contentChunks) (\(number(self.chunksPerSecond, 0))/s), data events \(self.dataEvents), "
                + "per request \(self.contentChunksPerRequestMin.map(String.init) ?? "-")...\(self.contentChunksPerRequestMax.map(String.init) ?? "-")",
            "  ttfb p50 \(number(self.ttfbMs.p50, 3)) p99 \(number(self.ttfbMs.p99, 3)) ms; ttfc p50 \(number(self.ttfcMs.p50, 3)) "
                + "p99 \(number(self.ttfcMs.p99, 3)) ms; gap p99 \(number(self.gapMs.p99, 3)) ms",
        ]
        if let relay = self.relay {
            lines.append(
                "  relay CPU \(number(relay.cpuSeconds)) s (system \(number(relay.systemCpuSeconds))), \(number(relay.cpuMicrosecondsPerChunk)) µs/chunk; "
                    + "RSS \(number(relay.rssBeforeMB, 1)) -> \(number(relay.rssAfterMB, 1)) MB, peak \(number(relay.peakRssMB, 1)) MB"
            )
        }
        if let upstream = self.upstream {
            lines.append("  upstream CPU \(number(upstream.cpuSeconds)) s, \(number(upstream.cpuMicrosecondsPerChunk)) µs/chunk")
        }
        lines.append("  load generator CPU \(number(self.loadGeneratorCpuSeconds)) s")
        return lines.joined(separator: "\n")
    }
}
