import AsyncHTTPClient
import NIOCore
import NIOPosix
import Synchronization

/// The HTTP clients the OpenAI-compatible upstreams share, one set per distinct set of
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

    private let clients = Mutex<[Key: UpstreamClientSet]>([:])
    private let eventLoopGroup: MultiThreadedEventLoopGroup

    init(eventLoopGroup: MultiThreadedEventLoopGroup) {
        self.eventLoopGroup = eventLoopGroup
    }

    /// The clients for `settings`, made on first use.
    func client(for settings: UpstreamSettings) -> UpstreamClientSet {
        let key = Key(
            connectMilliseconds: Int64(settings.connectTimeout.seconds * 1000),
            idleMilliseconds: Int64(settings.idleTimeout.seconds * 1000),
            maxConnections: settings.maxConnections
        )
        return self.clients.withLock { clients in
            if let set = clients[key] { return set }
            let set = UpstreamClientSet(key: key, eventLoopGroup: self.eventLoopGroup)
            clients[key] = set
            return set
        }
    }

    func shutdown() async {
        let all = self.clients.withLock { clients in
            defer { clients.removeAll() }
            return clients.values.flatMap(\.clients)
        }
        for client in all { try? await client.shutdown() }
    }
}

/// A few `HTTPClient`s that share one upstream's load, each with its own connection pool.
///
/// AsyncHTTPClient's pool copies its list of connections each time it opens one, so
/// opening the n-th connection costs O(n): with 5,000 streams starting at once, a quarter
/// of the daemon's CPU went there (perf, `HTTPConnectionPool.StateMachine.newHTTP1ConnectionCreated`).
/// Requests go round-robin to `shards` pools of `max_connections / shards` connections, so
/// each list stays short. Fewer than 512 connections: one pool, as before.
final class UpstreamClientSet: Sendable {
    let clients: [HTTPClient]
    private let nextIndex = Atomic<Int>(0)

    fileprivate init(key: UpstreamClients.Key, eventLoopGroup: MultiThreadedEventLoopGroup) {
        let shards = max(1, min(8, key.maxConnections / 256))
        let perShard = (key.maxConnections + shards - 1) / shards
        var configuration = HTTPClient.Configuration()
        // The read timeout is AsyncHTTPClient's idle timeout: no bytes for this long.
        configuration.timeout = .init(connect: .milliseconds(key.connectMilliseconds), read: .milliseconds(key.idleMilliseconds))
        // AsyncHTTPClient's default of 8 connections per host would queue the 9th stream.
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: perShard)
        self.clients = (0..<shards).map { _ in HTTPClient(eventLoopGroup: eventLoopGroup, configuration: configuration) }
    }

    /// The client for the next request.
    func next() -> HTTPClient {
        guard self.clients.count > 1 else { return self.clients[0] }
        let index = self.nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        return self.clients[index % self.clients.count]
    }
}
