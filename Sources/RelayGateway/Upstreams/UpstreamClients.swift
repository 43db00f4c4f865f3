import AsyncHTTPClient
import NIOCore
import NIOPosix
import Synchronization

/// The HTTP clients the OpenAI-compatible upstreams share, one set per distinct set of
/// connection settings (connect and idle timeouts, pool size), and the connection pools of
/// plain-HTTP upstreams, one set per origin and settings.
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

    /// Where our own plain-HTTP connections go: an origin and the connection settings.
    struct OriginKey: Hashable {
        var host: String
        var port: Int
        var connectMilliseconds: Int64
        var maxConnections: Int
    }

    private let plainPools = Mutex<[OriginKey: UpstreamConnectionPools]>([:])
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

    /// For an `http://` upstream, the target on our own connection pools (made on first
    /// use, shared by upstreams of the same origin and settings); nil for any other URL.
    func plainHTTPTarget(for settings: UpstreamSettings) -> PlainHTTPTarget? {
        guard let url = PlainHTTPTarget.parse(OpenAICompatibleUpstream.chatURL(for: settings)) else { return nil }
        let key = OriginKey(
            host: url.host,
            port: url.port,
            connectMilliseconds: Int64(settings.connectTimeout.seconds * 1000),
            maxConnections: settings.maxConnections
        )
        let pools = self.plainPools.withLock { pools in
            if let existing = pools[key] { return existing }
            let made = UpstreamConnectionPools(
                eventLoopGroup: self.eventLoopGroup,
                host: key.host,
                port: key.port,
                connectTimeout: .milliseconds(key.connectMilliseconds),
                maximumConnections: key.maxConnections
            )
            pools[key] = made
            return made
        }
        return PlainHTTPTarget(pools: pools, requestURI: url.requestURI, hostHeader: url.hostHeader)
    }

    func shutdown() async {
        let all = self.clients.withLock { clients in
            defer { clients.removeAll() }
            return clients.values.flatMap(\.clients)
        }
        for client in all { try? await client.shutdown() }
        let pools = self.plainPools.withLock { pools in
            defer { pools.removeAll() }
            return Array(pools.values)
        }
        for pool in pools { await pool.shutdown() }
    }
}

/// A few `HTTPClient`s that share one upstream's load, each with its own connection pool,
/// and each bound to one event loop.
///
/// Bound to a loop: a request that runs on its client connection's loop (a quiet loop, see
/// ``ChatExchange``) takes a client of that loop, so its upstream connection lives there
/// too and an event goes from one socket to the other without waking another thread.
/// AsyncHTTPClient prefers the caller's loop but hands out an idle connection of any loop
/// first: strace showed requests at concurrency 1 crossing to the other loop and back
/// three times before their first byte. Requests that run on Swift's pool go round-robin.
///
/// Several per loop: AsyncHTTPClient's pool copies its list of connections each time it
/// opens one, so opening the n-th connection costs O(n): with 5,000 streams starting at
/// once, a quarter of the daemon's CPU went there (perf,
/// `HTTPConnectionPool.StateMachine.newHTTP1ConnectionCreated`). So from 512 connections
/// up there are up to 8 pools in all, each of `max_connections / pools` connections (at
/// least one per loop).
final class UpstreamClientSet: Sendable {
    let clients: [HTTPClient]
    /// Each client's connection limit (AsyncHTTPClient's soft limit per host).
    let connectionsPerPool: Int
    /// The clients bound to each loop, by the loop's identity.
    private let clientsByLoop: [ObjectIdentifier: [HTTPClient]]
    private let nextIndex = Atomic<Int>(0)

    fileprivate init(key: UpstreamClients.Key, eventLoopGroup: MultiThreadedEventLoopGroup) {
        let loops = Array(eventLoopGroup.makeIterator())
        let perLoop = max(1, min(8, key.maxConnections / 256) / loops.count)
        let pools = loops.count * perLoop
        var configuration = HTTPClient.Configuration()
        // The read timeout is AsyncHTTPClient's idle timeout: no bytes for this long.
        configuration.timeout = .init(connect: .milliseconds(key.connectMilliseconds), read: .milliseconds(key.idleMilliseconds))
        // AsyncHTTPClient's default of 8 connections per host would queue the 9th stream.
        self.connectionsPerPool = max(1, (key.maxConnections + pools - 1) / pools)
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: self.connectionsPerPool)
        // No distributed tracing here: without a tracer AsyncHTTPClient skips the span it
        // makes for every request even with the no-op tracer, which parsed the URL a second
        // time (about 36,000 instructions per request in callgrind).
        configuration.tracing.tracer = nil
        var byLoop: [ObjectIdentifier: [HTTPClient]] = [:]
        for loop in loops {
            byLoop[ObjectIdentifier(loop)] = (0..<perLoop).map { _ in HTTPClient(eventLoopGroup: loop, configuration: configuration) }
        }
        self.clientsByLoop = byLoop
        self.clients = loops.flatMap { byLoop[ObjectIdentifier($0)] ?? [] }
    }

    /// The client for the next request: one of the current loop's when called on a loop.
    func next() -> HTTPClient {
        let index = self.nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        if let loop = MultiThreadedEventLoopGroup.currentEventLoop, let own = self.clientsByLoop[ObjectIdentifier(loop)] {
            return own[index % own.count]
        }
        return self.clients[index % self.clients.count]
    }
}
