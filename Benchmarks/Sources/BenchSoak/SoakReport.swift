import Foundation

/// One pass/fail finding of the soak, with the numbers behind it.
struct SoakCheck: Codable, Sendable {
    var name: String
    var passed: Bool
    var detail: String
}

/// Everything the soak measured, the checks it made, and the table it prints.
struct SoakReport: Codable, Sendable {
    var requests: Int
    var concurrency: Int
    var durationSeconds: Double
    var kinds: [String: KindTally]
    var contentChunks: Int
    var dataEvents: Int
    var connectionsOpened: Int
    var staleConnectionRetries: Int
    var samples: [DaemonSample]
    var ledger: UsageLedgerTally
    var expectedLedgerOutcomes: [String: Int]
    var activeStreamsAtEnd: Int?
    var relayRequestsCounted: Int?
    var checks: [SoakCheck]

    var passed: Bool { self.checks.allSatisfy(\.passed) }

    /// The checks: every request answered as it must be and recorded once in the ledger, no
    /// stream left open in the relay, and RSS, descriptors and threads no higher after the
    /// warm-up sample than `tolerance` above it.
    ///
    /// Descriptors get one allowance: at rest the relay may hold, besides those it had at
    /// the start, one kept-alive connection per client and one idle pooled upstream
    /// connection per client; how many of the pool's are open varies from step to step, so
    /// a count within `start + 2 × concurrency` passes too. Threads may be one more than the
    /// most seen from the warm-up to the middle of the run: the runtime's and NIO's pools
    /// start threads lazily, and one started just after the warm-up sample is no leak (a
    /// soak failed so: 7 threads at warm-up, 8 from 30%, 9 at the end); 10% of 8 threads is less
    /// than one. A leak grows past both, in the second half too.
    static func checks(
        kinds: [SoakRequestKind: KindTally], contentChunks: Int, minimumContentChunks: Int, samples: [DaemonSample],
        concurrency: Int,
        warmUpLabel: String, tolerance: Double, ledger: UsageLedgerTally, expectedLedger: [String: Int],
        activeStreams: Int?, relayRequestsCounted: Int?
    ) -> [SoakCheck] {
        let sent = kinds.values.reduce(0) { $0 + $1.sent }
        let failures = kinds.values.reduce(into: [String: Int]()) { $0.merge($1.failures, uniquingKeysWith: +) }
        var checks = [
            SoakCheck(
                name: "answers", passed: failures.isEmpty,
                detail: failures.isEmpty
                    ? "all \(sent) requests answered as expected"
                    : "unexpected answers: " + failures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            ),
            SoakCheck(
                name: "usage ledger", passed: ledger.lines == sent && ledger.outcomes == expectedLedger && ledger.unreadableLines == 0,
                detail: "\(ledger.lines) lines for \(sent) requests; outcomes \(Self.describe(ledger.outcomes))"
                    + (ledger.outcomes == expectedLedger ? "" : ", expected \(Self.describe(expectedLedger))")
                    + (ledger.unreadableLines > 0 ? "; \(ledger.unreadableLines) unreadable" : "")
            ),
            SoakCheck(
                name: "no stream left", passed: activeStreams == 0 && relayRequestsCounted == sent,
                detail: "/healthz at the end: active_streams \(activeStreams.map(String.init) ?? "?"), "
                    + "requests_total grew by \(relayRequestsCounted.map(String.init) ?? "?") (sent \(sent))"
            ),
        ]
        if minimumContentChunks > 0 {
            checks.append(
                SoakCheck(
                    name: "content chunks", passed: contentChunks >= minimumContentChunks,
                    detail: "\(contentChunks) relayed, at least \(minimumContentChunks) wanted"
                )
            )
        }
        guard let warmIndex = samples.firstIndex(where: { $0.label == warmUpLabel }) else {
            checks.append(SoakCheck(name: "growth", passed: false, detail: "no warm-up sample (the relay's /proc unreadable?)"))
            return checks
        }
        let warm = samples[warmIndex]
        let later = samples[(warmIndex + 1)...]
        let descriptorAllowance = samples.first.map { Double($0.openDescriptors + 2 * concurrency) }
        let firstHalf = samples[warmIndex..<(warmIndex + 1 + later.count / 2)]
        let threadsByMiddle = firstHalf.map(\.threads).max() ?? warm.threads
        let measures: [(name: String, value: (DaemonSample) -> Double, unit: String, allowance: Double?)] = [
            ("RSS", { $0.residentMegabytes }, " MB", nil),
            ("open descriptors", { Double($0.openDescriptors) }, "", descriptorAllowance),
            ("threads", { Double($0.threads) }, "", Double(threadsByMiddle + 1)),
        ]
        for measure in measures {
            let base = measure.value(warm)
            guard let highest = later.max(by: { measure.value($0) < measure.value($1) }) else { continue }
            let value = measure.value(highest)
            let growth = base > 0 ? value / base - 1 : 0
            var detail = String(
                format: "highest after warm-up %.1f%@ (at %@) vs %.1f%@ at warm-up (%@): %+.1f%%, limit +%.0f%%",
                value, measure.unit, highest.label, base, measure.unit, warm.label, growth * 100, tolerance * 100
            )
            if let allowance = measure.allowance {
                detail += String(
                    format: measure.name == "threads" ? " or %.0f (one more than the most by mid-run)" : " or %.0f (start + 2 per client)",
                    allowance
                )
            }
            checks.append(
                SoakCheck(
                    name: "\(measure.name) flat",
                    passed: value <= base * (1 + tolerance) || value <= (measure.allowance ?? -1),
                    detail: detail
                )
            )
        }
        return checks
    }

    private static func describe(_ outcomes: [String: Int]) -> String {
        outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    var table: String {
        var lines = [
            String(
                format: "soak: %d requests, %d clients, %.1f s (%.0f req/s), %d content chunks (%d data events), %d connections",
                self.requests, self.concurrency, self.durationSeconds, Double(self.requests) / max(self.durationSeconds, 0.001),
                self.contentChunks, self.dataEvents, self.connectionsOpened
            ),
            "",
            Self.row(["kind", "sent", "as expected", "failed", "content chunks"], widths: [16, 8, 12, 8, 15]),
        ]
        for kind in SoakRequestKind.allCases {
            guard let tally = self.kinds[kind.rawValue] else { continue }
            let failed = tally.failures.values.reduce(0, +)
            lines.append(
                Self.row([kind.rawValue, "\(tally.sent)", "\(tally.answeredAsExpected)", "\(failed)", "\(tally.contentChunks)"], widths: [16, 8, 12, 8, 15])
            )
        }
        lines.append("")
        lines.append(Self.row(["sample", "seconds", "requests", "content chunks", "RSS MB", "fds", "threads"], widths: [12, 8, 9, 15, 8, 6, 8]))
        for sample in self.samples {
            lines.append(
                Self.row(
                    [
                        sample.label, String(format: "%.1f", sample.secondsSinceStart), "\(sample.requestsDone)", "\(sample.contentChunks)",
                        String(format: "%.1f", sample.residentMegabytes), "\(sample.openDescriptors)", "\(sample.threads)",
                    ],
                    widths: [12, 8, 9, 15, 8, 6, 8]
                )
            )
        }
        lines.append("")
        lines.append("ledger: \(Self.describe(self.ledger.outcomes)) (\(self.ledger.lines) lines)")
        if self.staleConnectionRetries > 0 {
            lines.append("requests sent again after the relay closed a kept-alive connection first: \(self.staleConnectionRetries)")
        }
        lines.append("")
        for check in self.checks {
            lines.append("\(check.passed ? "PASS" : "FAIL")  \(check.name): \(check.detail)")
        }
        return lines.joined(separator: "\n")
    }

    /// The first column left-aligned, the others right-aligned.
    private static func row(_ cells: [String], widths: [Int]) -> String {
        zip(cells, widths).enumerated().map { index, pair in
            let (cell, width) = pair
            let padding = String(repeating: " ", count: max(0, width - cell.count))
            return index == 0 ? cell + padding : padding + cell
        }.joined(separator: "  ")
    }
}
