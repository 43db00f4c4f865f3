#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
import NIOPosix

/// What one worker did; merged across workers at the end.
struct WorkerTally: Sendable {
    var completed = 0
    var failures: [String: Int] = [:]
    var connectionsOpened = 0
    /// Connects refused with EAGAIN (a full Unix-socket backlog) and tried again, as a
    /// blocking client's connect would simply wait.
    var connectRetries = 0
    /// Requests sent on a kept-alive connection that the server closed without a response,
    /// and sent again on a new one (what an HTTP client does with a stale pooled connection).
    var staleConnectionRetries = 0
    /// Responses after which the server closed a connection it had not announced closing
    /// (no `Connection: close`), though the request asked to keep it.
    var unannouncedCloses = 0

    var failed: Int { self.failures.values.reduce(0, +) }

    mutating func fail(_ kind: String) { self.failures[kind, default: 0] += 1 }

    mutating func merge(_ other: WorkerTally) {
        self.completed += other.completed
        self.failures.merge(other.failures, uniquingKeysWith: +)
        self.connectionsOpened += other.connectionsOpened
        self.connectRetries += other.connectRetries
        self.staleConnectionRetries += other.staleConnectionRetries
        self.unannouncedCloses += other.unannouncedCloses
    }
}

/// One client: a connection kept alive across requests, a streaming request at a time, until
/// the deadline passes or its share of requests is done.
struct LoadWorker: Sendable {
    let loop: any EventLoop
    let statistics: LoopStatistics
    let endpoint: Endpoint
    let request: RequestTemplate
    let expectedContentChunks: Int?
    /// Monotonic nanoseconds after which no request is started; requests in flight finish.
    let deadline: UInt64?
    let requestLimit: Int?
    let idleTimeout: TimeAmount

    /// Connects refused for a full backlog are tried again this many times, a little later each time.
    static let connectAttempts = 400

    func run() async -> WorkerTally {
        var tally = WorkerTally()
        var connection: (any Channel)?
        var attempts = 0
        var retryingStaleConnection = false
        while retryingStaleConnection || self.mayStartAnother(after: attempts) {
            if !retryingStaleConnection { attempts += 1 }
            retryingStaleConnection = false
            do {
                let channel: any Channel
                let reused: Bool
                if let open = connection, open.isActive {
                    channel = open
                    reused = true
                } else {
                    channel = try await self.connect(tally: &tally)
                    connection = channel
                    reused = false
                }
                let outcome = try await self.exchange(on: channel)
                if reused, outcome.closedBeforeResponse {
                    tally.staleConnectionRetries += 1
                    retryingStaleConnection = true
                    connection = nil
                    continue
                }
                if outcome.failure == nil, outcome.announcedKeepAlive, !outcome.keepAlive {
                    tally.unannouncedCloses += 1
                }
                if let failure = outcome.failure {
                    tally.fail(failure)
                } else {
                    tally.completed += 1
                }
                if !outcome.keepAlive || outcome.failure != nil {
                    try? await channel.close()
                    connection = nil
                }
            } catch {
                tally.fail(Self.describe(error))
                try? await connection?.close()
                connection = nil
                // A target that refuses everything must not turn the workers into a busy loop.
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        try? await connection?.close()
        return tally
    }

    private func mayStartAnother(after attempts: Int) -> Bool {
        if let limit = self.requestLimit, attempts >= limit { return false }
        if let deadline = self.deadline, StreamingExchangeHandler.now() >= deadline { return false }
        return true
    }

    private func exchange(on channel: any Channel) async throws -> ExchangeOutcome {
        let outcome = channel.eventLoop.makePromise(of: ExchangeOutcome.self)
        // A write that fails (the peer closed first) still ends the wait, as a request that got
        // no response; a second completion of the promise is ignored.
        channel.writeAndFlush(ExchangeRequest(head: self.request.head, body: self.request.body, outcome: outcome))
            .whenFailure { error in
                outcome.succeed(ExchangeOutcome(failure: "write failed: \(error)", keepAlive: false, closedBeforeResponse: true))
            }
        return try await outcome.futureResult.get()
    }

    private func connect(tally: inout WorkerTally) async throws -> any Channel {
        let statistics = self.statistics
        let expected = self.expectedContentChunks
        let idleTimeout = self.idleTimeout
        let bootstrap = ClientBootstrap(group: self.loop)
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        StreamingExchangeHandler(statistics: statistics, expectedContentChunks: expected, idleTimeout: idleTimeout)
                    )
                }
            }
        var retries = 0
        while true {
            do {
                let channel: any Channel
                switch self.endpoint {
                case .unixSocket(let path): channel = try await bootstrap.connect(unixDomainSocketPath: path).get()
                case .tcp(let host, let port): channel = try await bootstrap.connect(host: host, port: port).get()
                }
                tally.connectionsOpened += 1
                return channel
            } catch let error as IOError where error.errnoCode == EAGAIN && retries < Self.connectAttempts {
                retries += 1
                tally.connectRetries += 1
                try await Task.sleep(for: .milliseconds(min(5 * retries, 100)))
            } catch {
                throw ConnectFailure(underlying: error)
            }
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let failure = error as? ConnectFailure { return "connect: \(failure.underlying)" }
        return "\(error)"
    }
}

/// A connection that could not be made, kept apart from failures of a request.
struct ConnectFailure: Error {
    let underlying: any Error
}
