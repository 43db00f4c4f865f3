import AsyncHTTPClient
import Foundation
import HummingbirdCore
public import Logging
import NIOCore
public import NIOPosix
public import RelayCore
public import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The chatrelayd daemon as a service: the HTTP/1.1 server on the Unix socket, the shared
/// upstream HTTP client, and the current configuration generation.
///
/// Run it in a `ServiceGroup`; graceful shutdown stops accepting, lets requests in flight
/// finish, then closes the upstream client.
public final class Gateway: Service, Sendable {
    /// The chatrelayd version reported by `--version` and `/healthz`.
    public static let version = "0.1.0"

    private let runtime: Mutex<GatewayRuntime>
    private let httpClient: HTTPClient
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    let logger: Logger
    let statistics = GatewayStatistics()
    let startedAt = ContinuousClock.now
    private let readiness: (stream: AsyncStream<String>, continuation: AsyncStream<String>.Continuation)

    /// Builds the gateway for `config`; throws when the configuration cannot be served.
    public init(
        config: GatewayConfig,
        logger: Logger,
        eventLoopGroup: MultiThreadedEventLoopGroup = .singleton,
        registry: StageRegistry = .builtIn
    ) throws(ConfigError) {
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.timeout = .init(connect: .seconds(10), read: .minutes(5))
        let largestPool = config.upstreams.map(\.maxConnections).max() ?? 8
        // AsyncHTTPClient's default of 8 connections per host would queue the 9th stream.
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: largestPool)
        if let upstream = config.upstreams.first(where: { $0.kind == .openAICompatible }) {
            clientConfiguration.timeout = .init(
                connect: .milliseconds(Int64(upstream.connectTimeout.seconds * 1000)),
                read: .milliseconds(Int64(upstream.idleTimeout.seconds * 1000))
            )
        }
        let client = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: clientConfiguration, backgroundActivityLogger: logger)
        let runtime: GatewayRuntime
        do {
            runtime = try GatewayRuntime(config: config, httpClient: client, registry: registry)
        } catch {
            try? client.syncShutdown()
            throw error
        }
        self.runtime = Mutex(runtime)
        self.httpClient = client
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.readiness = AsyncStream.makeStream()
    }

    /// Releases what the gateway holds without running it (for `check-config`).
    public func close() async {
        try? await self.httpClient.shutdown()
    }

    /// The configuration generation new requests use.
    public var currentRuntime: GatewayRuntime { self.runtime.withLock { $0 } }

    /// Returns the socket path once the gateway accepts connections.
    public func waitUntilReady() async -> String? {
        var iterator = self.readiness.stream.makeAsyncIterator()
        return await iterator.next()
    }

    public func run() async throws {
        let settings = self.currentRuntime.config.server
        do {
            try await self.serve(settings)
        } catch {
            try? await self.httpClient.shutdown()
            self.readiness.continuation.finish()
            throw error
        }
        try? await self.httpClient.shutdown()
        self.readiness.continuation.finish()
        self.logger.info("chatrelayd stopped")
    }

    private func serve(_ settings: ServerSettings) async throws {
        try UnixSocketPath.prepare(settings.socket)
        let handler = HTTPRequestHandler(gateway: self)
        let server = Server(
            childChannelSetup: HTTP1Channel(
                responder: { request, writer, channel in try await handler.respond(to: request, writer: writer, channel: channel) },
                configuration: .init(idleTimeout: .milliseconds(Int64(settings.idleTimeout.seconds * 1000)))
            ),
            configuration: .init(address: .unixDomainSocket(path: settings.socket), serverName: nil, backlog: 1024),
            onServerRunning: { _ in
                do {
                    try UnixSocketPath.setMode(settings.socket, mode: settings.socketMode.mode)
                } catch {
                    self.logger.error("\(error)")
                }
                self.logger.info(
                    "chatrelayd \(Self.version) listening",
                    metadata: ["socket": "\(settings.socket)", "mode": "\(settings.socketMode)"]
                )
                self.readiness.continuation.yield(settings.socket)
            },
            eventLoopGroup: self.eventLoopGroup,
            logger: self.logger
        )
        try await server.run()
        unlink(settings.socket)
    }
}

/// Counters for `/healthz` and the status line.
final class GatewayStatistics: Sendable {
    let activeStreams = Atomic<Int>(0)
    let requestsTotal = Atomic<Int>(0)
}
