import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The connection pools of the OpenAI-compatible upstreams, one set per origin (scheme,
/// host, port) and connection settings (connect timeout, pool size).
///
/// They live as long as the gateway, not a configuration generation: a reload reuses the
/// pools (and their warm connections) of unchanged upstreams, and streams still running on
/// an old generation keep theirs.
final class UpstreamClients: Sendable {
    /// Where connections go, and how they are made.
    struct OriginKey: Hashable {
        var host: String
        var port: Int
        var usesTLS: Bool
        var connectMilliseconds: Int64
        var maxConnections: Int
    }

    private let pools = Mutex<[OriginKey: UpstreamConnectionPools]>([:])
    private let eventLoopGroup: MultiThreadedEventLoopGroup

    init(eventLoopGroup: MultiThreadedEventLoopGroup) {
        self.eventLoopGroup = eventLoopGroup
    }

    /// The upstream's target on its pools (made on first use, shared by upstreams of the
    /// same origin and settings), or why there is none: a base URL that is not `http://` or
    /// `https://` with a host, or TLS that cannot be set up (the system's trust roots
    /// cannot be read).
    func target(for settings: UpstreamSettings) -> Result<HTTP1Target, ConfigError> {
        let url = OpenAICompatibleUpstream.chatURL(for: settings)
        guard let parsed = HTTP1Target.parse(url) else {
            return .failure(ConfigError("base_url '\(settings.baseURL ?? "")' is not an http:// or https:// URL with a host"))
        }
        let key = OriginKey(
            host: parsed.host,
            port: parsed.port,
            usesTLS: parsed.usesTLS,
            connectMilliseconds: Int64(settings.connectTimeout.seconds * 1000),
            maxConnections: settings.maxConnections
        )
        let made = self.pools.withLock { pools -> Result<UpstreamConnectionPools, ConfigError> in
            if let existing = pools[key] { return .success(existing) }
            do {
                let made = try UpstreamConnectionPools(
                    eventLoopGroup: self.eventLoopGroup,
                    host: key.host,
                    port: key.port,
                    tls: key.usesTLS ? TLSConfiguration.makeClientConfiguration() : nil,
                    connectTimeout: .milliseconds(key.connectMilliseconds),
                    maximumConnections: key.maxConnections
                )
                pools[key] = made
                return .success(made)
            } catch {
                return .failure(ConfigError("TLS cannot be set up: \(error)"))
            }
        }
        return made.map { HTTP1Target(pools: $0, requestURI: parsed.requestURI, hostHeader: parsed.hostHeader) }
    }

    func shutdown() async {
        let all = self.pools.withLock { pools in
            defer { pools.removeAll() }
            return Array(pools.values)
        }
        for pools in all { await pools.shutdown() }
    }
}
