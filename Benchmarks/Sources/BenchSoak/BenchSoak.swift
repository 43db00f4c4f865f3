import BenchSupport
import Foundation
import NIOCore
import NIOPosix

/// `bench-soak`: a long mixed run through the relay (streams, completions, errors, hang-ups)
/// that checks nothing grows and every request lands in the usage ledger. See the "Soak"
/// section of Benchmarks/README.md; `Benchmarks/soak` starts everything it needs.
@main
enum BenchSoak {
    static func main() async {
        let configuration: SoakConfiguration
        do {
            configuration = try SoakConfiguration(arguments: Array(CommandLine.arguments.dropFirst()))
        } catch {
            printToStandardError("bench-soak: \(error)")
            exit(2)
        }
        FileDescriptorLimit.raiseToHardLimit()
        let report = await self.soak(configuration)
        print(report.table)
        if let path = configuration.jsonPath {
            do {
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try encoder.encode(report).write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                printToStandardError("bench-soak: cannot write \(path): \(error)")
                exit(2)
            }
        }
        exit(report.passed ? 0 : 1)
    }

    static func soak(_ configuration: SoakConfiguration) async -> SoakReport {
        let group = MultiThreadedEventLoopGroup.singleton
        let ledgerLinesBefore = UsageLedgerTally.lineCount(path: configuration.ledgerPath)
        let requestsBefore = await self.health(configuration, group: group)?.requestsTotal
        let progress = SoakProgress(totalRequests: configuration.requests, mix: configuration.mix, steps: configuration.steps, pid: configuration.pid)
        progress.sample(label: "start")
        printToStandardError("bench-soak: \(configuration.requests) requests, \(configuration.concurrency) clients")

        let tally = await withTaskGroup(of: WorkerTally.self) { tasks in
            for _ in 0..<configuration.concurrency {
                tasks.addTask {
                    await SoakWorker(
                        socketPath: configuration.socketPath, group: group, progress: progress,
                        idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds))
                    ).run()
                }
            }
            var total = WorkerTally()
            for await worker in tasks { total.merge(worker) }
            return total
        }
        let duration = progress.secondsSinceStart
        let sent = tally.kinds.values.reduce(0) { $0 + $1.sent }

        // A hang-up is recorded when the relay notices it, after the client has gone: wait
        // for the ledger to catch up (bounded; a missing line then fails the check).
        let ledgerDeadline = NIODeadline.now() + .seconds(Int64(configuration.ledgerWaitSeconds))
        while UsageLedgerTally.lineCount(path: configuration.ledgerPath) - ledgerLinesBefore < sent, NIODeadline.now() < ledgerDeadline {
            try? await Task.sleep(for: .milliseconds(100))
        }
        let ledger = UsageLedgerTally.read(path: configuration.ledgerPath, skipping: ledgerLinesBefore)
        let health = await self.health(configuration, group: group)
        progress.sample(label: "end")

        let samples = progress.allSamples
        let kinds = tally.kinds
        let expectedLedger = UsageLedgerTally.expectedOutcomes(for: kinds.mapValues(\.sent))
        let relayRequestsCounted = health.flatMap { now in requestsBefore.map { now.requestsTotal - $0 } }
        let contentChunks = kinds.values.reduce(0) { $0 + $1.contentChunks }
        // The warm-up is the `warmUpSteps`-th sample after the start.
        let stepSamples = samples.filter { $0.label != "start" && $0.label != "end" }
        let warmUpLabel = stepSamples.count >= configuration.warmUpSteps ? stepSamples[configuration.warmUpSteps - 1].label : "?"
        return SoakReport(
            requests: sent, concurrency: configuration.concurrency, durationSeconds: duration,
            kinds: Dictionary(uniqueKeysWithValues: kinds.map { ($0.key.rawValue, $0.value) }),
            contentChunks: contentChunks, dataEvents: kinds.values.reduce(0) { $0 + $1.dataEvents },
            connectionsOpened: tally.connectionsOpened, staleConnectionRetries: tally.staleConnectionRetries,
            samples: samples, ledger: ledger, expectedLedgerOutcomes: expectedLedger,
            activeStreamsAtEnd: health?.activeStreams, relayRequestsCounted: relayRequestsCounted,
            checks: SoakReport.checks(
                kinds: kinds, contentChunks: contentChunks, minimumContentChunks: configuration.minimumContentChunks,
                samples: samples, concurrency: configuration.concurrency, warmUpLabel: warmUpLabel, tolerance: configuration.growthTolerance, ledger: ledger,
                expectedLedger: expectedLedger, activeStreams: health?.activeStreams, relayRequestsCounted: relayRequestsCounted
            )
        )
    }

    /// The relay's `/healthz`: streams still open and chat requests counted since it started.
    private static func health(_ configuration: SoakConfiguration, group: any EventLoopGroup) async -> (activeStreams: Int, requestsTotal: Int)? {
        guard let body = try? await SoakConnection.get("/healthz", socketPath: configuration.socketPath, group: group),
            let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
            let active = json["active_streams"] as? Int, let total = json["requests_total"] as? Int
        else { return nil }
        return (active, total)
    }
}
