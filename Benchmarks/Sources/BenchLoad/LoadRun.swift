import Foundation
import NIOCore
import NIOPosix

/// Runs the workers of one configuration and turns what they measured into a ``LoadReport``.
struct LoadRun {
    let configuration: LoadConfiguration

    func execute() async throws -> LoadReport {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.configuration.threads)
        let loops = Array(group.makeIterator())
        let statistics = loops.map { _ in LoopStatistics() }
        let request = self.configuration.makeRequestTemplate()

        let peakReset = ProcessSample.resetPeak(pids: self.configuration.relayPids)
        let relayBefore = ProcessSample.read(pids: self.configuration.relayPids)
        let upstreamBefore = ProcessSample.read(pids: self.configuration.upstreamPids)
        let ownBefore = OwnCPU.seconds()
        let start = StreamingExchangeHandler.now()
        let deadline = self.configuration.durationSeconds.map { start + UInt64($0 * 1_000_000_000) }

        let tally = await withTaskGroup(of: WorkerTally.self) { tasks in
            for index in 0..<self.configuration.concurrency {
                let worker = LoadWorker(
                    loop: loops[index % loops.count], statistics: statistics[index % loops.count],
                    endpoint: self.configuration.endpoint, request: request,
                    expectedContentChunks: self.configuration.expectedContentChunks,
                    deadline: deadline, requestLimit: self.configuration.requestsPerWorker,
                    idleTimeout: .seconds(Int64(self.configuration.idleTimeoutSeconds))
                )
                tasks.addTask { await worker.run() }
            }
            var total = WorkerTally()
            for await tally in tasks { total.merge(tally) }
            return total
        }

        let elapsed = Double(StreamingExchangeHandler.now() - start) / 1_000_000_000
        let relayAfter = ProcessSample.read(pids: self.configuration.relayPids)
        let upstreamAfter = ProcessSample.read(pids: self.configuration.upstreamPids)
        let ownCPU = OwnCPU.seconds() - ownBefore

        var measured = LoopStatistics.Snapshot()
        for (loop, loopStatistics) in zip(loops, statistics) {
            measured.merge(try await loop.submit { loopStatistics.snapshot() }.get())
        }
        try await group.shutdownGracefully()

        func usage(_ pids: [Int32], _ before: ProcessSample?, _ after: ProcessSample?, peakReset: Bool) -> LoadReport.ProcessUsage? {
            guard let before, let after else { return nil }
            let cpu = after.cpuSeconds - before.cpuSeconds
            let perChunk = measured.dataEvents > 0 ? cpu * 1_000_000 / Double(measured.dataEvents) : nil
            return LoadReport.ProcessUsage(
                pids: pids, cpuSeconds: Self.rounded(cpu),
                systemCpuSeconds: Self.rounded(after.systemCpuSeconds - before.systemCpuSeconds),
                cpuMicrosecondsPerChunk: perChunk.map(Self.rounded),
                cpuMillisecondsPerThousandChunks: perChunk.map(Self.rounded),
                cpuMicrosecondsPerContentChunk: measured.contentChunks > 0
                    ? Self.rounded(cpu * 1_000_000 / Double(measured.contentChunks)) : nil,
                cpuCoreShare: Self.rounded(cpu / elapsed),
                rssBeforeMB: Self.megabytes(before.residentBytes), rssAfterMB: Self.megabytes(after.residentBytes),
                peakRssMB: Self.megabytes(max(after.peakResidentBytes, after.residentBytes)),
                pssAfterMB: after.proportionalBytes.map(Self.megabytes), peakRssReset: peakReset
            )
        }
        let succeeded = measured.mostContentChunks > 0 || measured.fewestContentChunks != Int.max
        return LoadReport(
            label: self.configuration.label,
            endpoint: self.configuration.endpoint.description,
            model: self.configuration.model,
            concurrency: self.configuration.concurrency,
            connectionClose: self.configuration.connectionClose,
            durationSeconds: self.configuration.durationSeconds,
            requestsPerWorker: self.configuration.requestsPerWorker,
            elapsedSeconds: Self.rounded(elapsed),
            requestsCompleted: tally.completed,
            errors: tally.failed,
            errorKinds: tally.failures,
            connectionsOpened: tally.connectionsOpened,
            connectRetries: tally.connectRetries,
            staleConnectionRetries: tally.staleConnectionRetries,
            unannouncedCloses: tally.unannouncedCloses,
            dataEvents: measured.dataEvents,
            contentChunks: measured.contentChunks,
            heartbeats: measured.heartbeats,
            responseBytes: measured.responseBytes,
            contentChunksPerRequestMin: succeeded ? measured.fewestContentChunks : nil,
            contentChunksPerRequestMax: succeeded ? measured.mostContentChunks : nil,
            requestsPerSecond: Self.rounded(Double(tally.completed) / elapsed),
            chunksPerSecond: Self.rounded(Double(measured.contentChunks) / elapsed),
            dataEventsPerSecond: Self.rounded(Double(measured.dataEvents) / elapsed),
            ttfbMs: LoadReport.Percentiles(measured.timeToFirstByte),
            ttfcMs: LoadReport.Percentiles(measured.timeToFirstContent),
            gapMs: LoadReport.Percentiles(measured.gapBetweenEvents),
            relay: usage(self.configuration.relayPids, relayBefore, relayAfter, peakReset: peakReset),
            upstream: usage(self.configuration.upstreamPids, upstreamBefore, upstreamAfter, peakReset: false),
            loadGeneratorCpuSeconds: Self.rounded(ownCPU)
        )
    }

    private static func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

    private static func megabytes(_ bytes: UInt64) -> Double { self.rounded(Double(bytes) / 1_048_576) }
}
