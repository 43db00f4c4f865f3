import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
import Synchronization
import Systemd
#if canImport(Glibc)
import Glibc
#endif

/// Where the listening socket comes from.
enum ListeningSocket: Sendable, Equatable {
    /// Bind this path ourselves (and remove it again on exit).
    case path(String)
    /// Adopt the descriptor systemd passed with socket activation.
    case adopted(fd: Int32, name: String)

    /// The socket systemd passed (`LISTEN_FDS`, preferring the one named `gateway`), else the configured path.
    static func choose(configuredPath: String) throws -> ListeningSocket {
        let passed = try ListenFDs.fromEnvironment()
        guard !passed.sockets.isEmpty else { return .path(configuredPath) }
        ListenFDs.unsetEnvironment()  // children must not think the sockets are theirs
        let chosen = passed.sockets.first { $0.name == "gateway" } ?? passed.sockets[0]
        guard ListenFDs.isUnixStreamListener(fd: chosen.fd) else {
            throw ConfigError("the socket systemd passed (fd \(chosen.fd), '\(chosen.name)') is not a listening Unix stream socket")
        }
        return .adopted(fd: chosen.fd, name: chosen.name)
    }
}

/// The gateway's HTTP/1.1 listener on a Unix socket.
///
/// HummingbirdCore's `Server` can only bind a path; under socket activation the socket
/// already exists, so this reaches one level down: NIO's `ServerBootstrap` binds the path
/// or adopts the descriptor, and each connection is handed to HummingbirdCore's
/// `HTTP1Channel`. Graceful shutdown stops accepting at once, lets connections finish,
/// and tells the gateway to start its drain clock.
struct GatewayListener {
    let socket: ListeningSocket
    let channel: HTTP1Channel
    let connectionLimit: ConnectionLimit
    let eventLoopGroup: MultiThreadedEventLoopGroup
    /// Where each connection's task runs: on the connection's own loop (see ``run``).
    let loopExecutors: EventLoopTaskExecutors
    let logger: Logger

    /// Runs until graceful shutdown and every connection has closed.
    func run(onListening: @Sendable () async -> Void, onShutdownRequested: @escaping @Sendable () -> Void) async throws {
        let quiescing = ServerQuiescingHelper(group: self.eventLoopGroup)
        let bootstrap = ServerBootstrap(group: self.eventLoopGroup)
            // The kernel caps this at net.core.somaxconn (4096 by default); a burst of
            // connections waits in the queue instead of being refused with EAGAIN.
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            // Accept up to 16 waiting connections per wake-up (nginx's multi_accept).
            .serverChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            // A client sends one request and then, for a stream's whole length, nothing: the
            // connection keeps its read buffer all that time. NIO's first guess is 2 KiB;
            // most requests of a local client fit 512 bytes, and a larger one makes the
            // next read 8 KiB at once. Reads grow to 16 KiB at most, not NIO's 64: a long
            // conversation's body then takes a few more reads, and its stream does not
            // keep a 64 KiB buffer (300 streams of 100 KB requests: 13 MB less).
            .childChannelOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 16384))
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
        let childSetup = self.channel
        let loopExecutors = self.loopExecutors
        let logger = self.logger
        let limit = self.connectionLimit
        let refusals = RateLimitedLog(logger: logger)
        @Sendable func setUp(_ channel: any Channel) -> EventLoopFuture<HTTP1Channel.Value> {
            let admitted = limit.admit(channel)
            if !admitted { refusals.note("refused a connection: max_connections (\(limit.maximum)) are open") }
            return childSetup.setup(channel: channel, logger: logger).flatMapThrowing { value in
                if !admitted { try channel.pipeline.syncOperations.addHandler(RefuseOnActive(), position: .first) }
                return value
            }
        }
        let server: NIOAsyncChannel<HTTP1Channel.Value, Never>
        switch self.socket {
        case .path(let path):
            try UnixSocketPath.prepare(path)
            server = try await bootstrap.bind(unixDomainSocketPath: path) { setUp($0) }
        case .adopted(let fd, _):
            server = try await bootstrap.bind(fd) { setUp($0) }
        }
        await onListening()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            // A connection's task runs on its connection's loop: the request
                            // head is read there, and its exchanges run there too
                            // (ChatExchange), so a request starts without waking a thread of
                            // Swift's pool.
                            let executor = loopExecutors.executor(for: connection.channel.eventLoop)
                            group.addTask(executorPreference: executor) { await childSetup.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("accepting connections failed: \(error)")
                }
            }
        } onGracefulShutdown: {
            quiescing.initiateShutdown(promise: nil)
            onShutdownRequested()
        }
        if case .path(let path) = self.socket { unlink(path) }
    }
}

/// Answers a connection over `max_connections` with 503 as soon as it is active, and closes it.
private final class RefuseOnActive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(ConnectionLimit.refusal)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // the request is not read
}

/// Logs a repeated warning at most once a second, with how many were left out.
final class RateLimitedLog: Sendable {
    private let logger: Logger
    private let state = Mutex<(last: ContinuousClock.Instant?, skipped: Int)>((nil, 0))

    init(logger: Logger) {
        self.logger = logger
    }

    func note(_ message: String) {
        let now = ContinuousClock.now
        let skipped = self.state.withLock { state -> Int? in
            if let last = state.last, last.duration(to: now) < .seconds(1) {
                state.skipped += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.skipped
        }
        guard let skipped else { return }
        self.logger.warning("\(message)\(skipped > 0 ? " (and \(skipped) more like it)" : "")")
    }
}
