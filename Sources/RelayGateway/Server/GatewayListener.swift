import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
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
    let eventLoopGroup: MultiThreadedEventLoopGroup
    let logger: Logger

    /// Runs until graceful shutdown and every connection has closed.
    func run(onListening: @Sendable () async -> Void, onShutdownRequested: @escaping @Sendable () -> Void) async throws {
        let quiescing = ServerQuiescingHelper(group: self.eventLoopGroup)
        let bootstrap = ServerBootstrap(group: self.eventLoopGroup)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
        let childSetup = self.channel
        let logger = self.logger
        let server: NIOAsyncChannel<HTTP1Channel.Value, Never>
        switch self.socket {
        case .path(let path):
            try UnixSocketPath.prepare(path)
            server = try await bootstrap.bind(unixDomainSocketPath: path) { childSetup.setup(channel: $0, logger: logger) }
        case .adopted(let fd, _):
            server = try await bootstrap.bind(fd) { childSetup.setup(channel: $0, logger: logger) }
        }
        await onListening()
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await childSetup.handle(value: connection, logger: logger) }
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
