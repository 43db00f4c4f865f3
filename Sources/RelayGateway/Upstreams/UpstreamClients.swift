import AsyncHTTPClient
import NIOCore
import NIOPosix
import Synchronization

/// The HTTP clients the OpenAI-compatible upstreams share, one per distinct set of
/// connection settings (connect and idle timeouts, pool size).
///
/// They live as long as the gateway, not a configuration generation: a reload reuses the
/// clients (and their warm connections) of unchanged upstreams, and streams still running
/// on an old generation keep theirs.
final class UpstreamClients: Sendable {
    struct Key: Hashable {
        var connectMilliseconds: Int64
        var idleMilliseconds: Int64
        var maxConnections: Int
    }

    private let clients = Mutex<[Key: HTTPClient]>([:])
    private let eventLoopGroup: MultiThreadedEventLoopGroup

    init(eventLoopGroup: MultiThreadedEventLoopGroup) {
        self.eventLoopGroup = eventLoopGroup
    }

    /// The client for `settings`, made on first use.
    func client(for settings: UpstreamSettings) -> HTTPClient {
        let key = Key(
            connectMilliseconds: Int64(settings.connectTimeout.seconds * 1000),
            idleMilliseconds: Int64(settings.idleTimeout.seconds * 1000),
            maxConnections: settings.maxConnections
        )
        return self.clients.withLock { clients in
            if let client = clients[key] { return client }
            var configuration = HTTPClient.Configuration()
            // The read timeout is AsyncHTTPClient's idle timeout: no bytes for this long.
            configuration.timeout = .init(connect: .milliseconds(key.connectMilliseconds), read: .milliseconds(key.idleMilliseconds))
            // AsyncHTTPClient's default of 8 connections per host would queue the 9th stream.
            configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: key.maxConnections)
            let client = HTTPClient(eventLoopGroup: self.eventLoopGroup, configuration: configuration)
            clients[key] = client
            return client
        }
    }

    func shutdown() async {
        let all = self.clients.withLock { clients in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in all { try? await client.shutdown() }
    }
}
