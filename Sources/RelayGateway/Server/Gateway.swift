import Foundation
import HummingbirdCore
public import Logging
import NIOCore
public import NIOPosix
public import RelayCore
public import ServiceLifecycle
import Synchronization
import Systemd

/// The chatrelayd daemon as a service: the HTTP/1.1 listener on the Unix socket, the shared
/// upstream HTTP client, and the current configuration generation.
///
/// Run it in a `ServiceGroup`. Graceful shutdown (SIGTERM) sends `STOPPING=1`, stops
/// accepting, lets streams in flight finish for `server.drain_timeout`, then ends the rest
/// with an error event. ``reload()`` swaps in a new configuration generation; streams in
/// flight keep the one they started with.
public final class Gateway: Service, Sendable {
    /// The chatrelayd version reported by `--version` and `/healthz`.
    public static let version = "0.1.0"

    private let runtime: Mutex<GatewayRuntime>
    private let reloadLock = Mutex(())
    private let clients: UpstreamClients
    private let eventLoopGroup: MultiThreadedEventLoopGroup
    private let registry: StageRegistry
    /// The file the configuration came from; nil for the built-in default.
    public let configPath: String?
    let logger: Logger
    let statistics = GatewayStatistics()
    let metrics = GatewayMetrics()
    let startedAt = ContinuousClock.now
    let drain = DrainSignal()
    let notifier = SystemdNotifier()
    /// The caller policy's counts and token budgets, kept across reloads.
    let callerGate: CallerGate
    /// A task executor per event loop, for requests that run on their connection's loop.
    let loopExecutors: EventLoopTaskExecutors
    private let readiness: (stream: AsyncStream<String>, continuation: AsyncStream<String>.Continuation)

    /// Builds the gateway for `config`; throws when the configuration cannot be served.
    /// With `checkOnly` (for `check-config`) it writes nothing: the usage ledger stays closed.
    public init(
        config: GatewayConfig,
        configPath: String? = nil,
        logger: Logger,
        eventLoopGroup: MultiThreadedEventLoopGroup = .singleton,
        registry: StageRegistry = .gateway,
        checkOnly: Bool = false
    ) throws(ConfigError) {
        let clients = UpstreamClients(eventLoopGroup: eventLoopGroup)
        let runtime: GatewayRuntime
        do {
            runtime = try GatewayRuntime(config: config, clients: clients, registry: registry, opensLedger: !checkOnly)
        } catch {
            Task { await clients.shutdown() }
            throw error
        }
        self.runtime = Mutex(runtime)
        self.clients = clients
        self.eventLoopGroup = eventLoopGroup
        self.registry = registry
        self.configPath = configPath
        self.logger = logger
        self.callerGate = CallerGate(config: config, logger: logger)
        self.loopExecutors = EventLoopTaskExecutors(group: eventLoopGroup)
        self.readiness = AsyncStream.makeStream()
    }

    /// Releases what the gateway holds without running it (for `check-config`).
    public func close() async {
        await self.clients.shutdown()
    }

    /// The configuration generation new requests use.
    public var currentRuntime: GatewayRuntime { self.runtime.withLock { $0 } }

    /// Returns the socket path once the gateway accepts connections (nil if it never does).
    public func waitUntilReady() async -> String? {
        var iterator = self.readiness.stream.makeAsyncIterator()
        return await iterator.next()
    }

    /// The event loops serving connections (for the watchdog's health probe).
    public var eventLoops: MultiThreadedEventLoopGroup { self.eventLoopGroup }

    public func run() async throws {
        let settings = self.currentRuntime.config.server
        do {
            let socket = try ListeningSocket.choose(configuredPath: settings.socket)
            let handler = HTTPRequestHandler(gateway: self)
            let listener = GatewayListener(
                socket: socket,
                channel: HTTP1Channel(
                    responder: { request, writer, channel in try await handler.respond(to: request, writer: writer, channel: channel) },
                    configuration: .init(
                        additionalChannelHandlers: [ClientWatchHandler(timeout: .milliseconds(Int64(settings.requestTimeout.seconds * 1000)), logger: self.logger)],
                        idleTimeout: .milliseconds(Int64(settings.idleTimeout.seconds * 1000))
                    )
                ),
                connectionLimit: ConnectionLimit(maximum: self.clientConnectionLimit(configured: settings.maxConnections)),
                eventLoopGroup: self.eventLoopGroup,
                loopExecutors: self.loopExecutors,
                logger: self.logger
            )
            try await listener.run(
                onListening: { self.listening(on: socket, settings: settings) },
                onShutdownRequested: { self.beginDrain(after: settings.drainTimeout) }
            )
        } catch {
            await self.clients.shutdown()
            self.readiness.continuation.finish()
            throw error
        }
        await self.clients.shutdown()
        self.callerGate.flush()
        self.readiness.continuation.finish()
        self.flushNotifications()
        self.logger.info("chatrelayd stopped", metadata: ["message_id": .string(LogMessageID.stopped)])
    }

    /// `server.max_connections`, or fewer when the descriptor limit cannot hold that many
    /// streams (see ``DescriptorLimit``).
    private func clientConnectionLimit(configured: Int) -> Int {
        guard let descriptors = DescriptorLimit.raiseSoftLimit() else { return configured }
        let allowed = DescriptorLimit.clientConnections(allowedBy: descriptors)
        guard allowed < configured else { return configured }
        self.logger.warning(
            "server.max_connections is \(configured), but the descriptor limit (\(descriptors)) holds only \(allowed) streams: each needs a client and an upstream connection; admitting \(allowed). Raise LimitNOFILE= to admit more.",
            metadata: ["max_connections": "\(configured)", "descriptor_limit": "\(descriptors)", "admitted": "\(allowed)"]
        )
        return allowed
    }

    private func listening(on socket: ListeningSocket, settings: ServerSettings) {
        let path: String
        switch socket {
        case .path(let socketPath):
            path = socketPath
            do {
                try UnixSocketPath.setMode(socketPath, mode: settings.socketMode.mode)
            } catch {
                self.logger.error("\(error)")
            }
        case .adopted(let fd, let name):
            path = settings.socket
            self.logger.info("adopted the socket systemd passed", metadata: ["fd": "\(fd)", "fd_name": "\(name)"])
        }
        self.logger.info(
            "chatrelayd \(Self.version) ready",
            metadata: ["socket": "\(path)", "mode": "\(settings.socketMode)", "message_id": .string(LogMessageID.ready)]
        )
        self.readiness.continuation.yield(path)
    }

    /// SIGTERM: tell systemd, stop accepting (the listener does), and start the drain clock.
    private func beginDrain(after timeout: ConfigDuration) {
        let streams = self.statistics.activeStreams.load(ordering: .relaxed)
        self.statistics.setState("stopping: draining \(streams) streams for up to \(timeout)")
        self.notify { _ = try $0.stopping() }
        self.notify { _ = try $0.status(self.statusLine()) }
        self.logger.info(
            "stopping: no new connections; draining streams in flight",
            metadata: ["active_streams": "\(streams)", "drain_timeout": "\(timeout)", "message_id": .string(LogMessageID.stopping)]
        )
        Task {
            try? await Task.sleep(for: timeout.duration)
            let remaining = self.statistics.activeStreams.load(ordering: .relaxed)
            if remaining > 0 {
                self.logger.warning("drain time is over: ending \(remaining) streams with an error event")
            }
            self.drain.fire()
        }
    }

    /// Loads the configuration file again and swaps it in; a bad file keeps the running one.
    ///
    /// Sends `RELOADING=1` (with `MONOTONIC_USEC`) and then `READY=1` either way, as systemd expects.
    @discardableResult
    public func reload() -> Result<String, ConfigError> {
        self.reloadLock.withLock { _ in
            self.notify { _ = try $0.reloading() }
            defer {
                self.notify { _ = try $0.ready() }
                self.notify { _ = try $0.status(self.statusLine()) }
            }
            let result: Result<String, ConfigError>
            do throws(ConfigError) {
                let config: GatewayConfig
                if let path = self.configPath {
                    config = try ConfigLoader.load(path: path, registry: self.registry)
                } else {
                    config = ConfigLoader.builtInDefault()
                }
                let next = try GatewayRuntime(config: config, clients: self.clients, registry: self.registry)
                self.runtime.withLock { $0 = next }
                let generation = self.statistics.generation.add(1, ordering: .relaxed).newValue
                self.statistics.setReloadError(nil)
                result = .success("configuration generation \(generation) loaded")
                self.logger.info(
                    "configuration reloaded",
                    metadata: ["generation": "\(generation)", "config": "\(self.configPath ?? "built-in default")", "message_id": .string(LogMessageID.reloaded)]
                )
            } catch {
                self.statistics.setReloadError(error.description)
                result = .failure(error)
                self.logger.error(
                    "reload failed; still serving the previous configuration: \(error)",
                    metadata: ["message_id": .string(LogMessageID.reloadFailed)]
                )
            }
            return result
        }
    }

    /// One line for systemd's STATUS=: what the gateway is doing right now.
    public func statusLine() -> String {
        let streams = self.statistics.activeStreams.load(ordering: .relaxed)
        let requests = self.statistics.requestsTotal.load(ordering: .relaxed)
        var line = self.statistics.state() ?? "serving"
        line += ": \(streams) stream\(streams == 1 ? "" : "s"), \(requests) request\(requests == 1 ? "" : "s")"
        let upstreams = self.statistics.upstreamHealth()
        if !upstreams.isEmpty {
            line += ", " + upstreams.map { "upstream \($0.name) \($0.state)" }.joined(separator: ", ")
        }
        if let failure = self.statistics.reloadError() { line += "; last reload failed: \(failure)" }
        return line
    }

    /// Sends to systemd from a serial queue of its own, in order: `sd_notify` blocks while
    /// the notify socket is full, and that must never stall the event loops or the task pool.
    func notify(_ body: @escaping @Sendable (SystemdNotifier) throws -> Void) {
        let notifier = self.notifier
        let logger = self.logger
        Self.notifyQueue.async {
            do {
                try body(notifier)
            } catch {
                logger.warning("sd_notify failed: \(error)")
            }
        }
    }

    /// Waits until every notification queued so far has been sent (at exit).
    func flushNotifications() {
        Self.notifyQueue.sync {}
    }

    private static let notifyQueue = DispatchQueue(label: "chatrelayd.sd-notify")
}

/// Counters and states for `/healthz` and the STATUS line.
final class GatewayStatistics: Sendable {
    let activeStreams = Atomic<Int>(0)
    let requestsTotal = Atomic<Int>(0)
    let generation = Atomic<Int>(1)
    private let states = Mutex<(state: String?, reloadError: String?, upstreams: [String: String])>((nil, nil, [:]))

    func setState(_ state: String?) { self.states.withLock { $0.state = state } }
    func state() -> String? { self.states.withLock { $0.state } }
    func setReloadError(_ error: String?) { self.states.withLock { $0.reloadError = error } }
    func reloadError() -> String? { self.states.withLock { $0.reloadError } }

    /// Records how the last request to `upstream` went: `ok`, or what failed.
    func noteUpstream(_ upstream: String, healthy: Bool, detail: String) {
        guard !upstream.isEmpty else { return }
        self.states.withLock { $0.upstreams[upstream] = healthy ? "ok" : "failing (\(detail))" }
    }

    func upstreamHealth() -> [(name: String, state: String)] {
        self.states.withLock { $0.upstreams.sorted { $0.key < $1.key }.map { ($0.key, $0.value) } }
    }
}

/// journald `MESSAGE_ID`s of the events an operator filters for
/// (`journalctl MESSAGE_ID=...`). Fixed 128-bit ids, as journald expects.
public enum LogMessageID {
    public static let started = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d01"
    public static let ready = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d02"
    public static let reloaded = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d03"
    public static let reloadFailed = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d04"
    public static let stopping = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d05"
    public static let stopped = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d06"
    public static let requestCompleted = "5b7c0c3f0a1e4a1f9d2f3c6a7e8b9d07"
}
