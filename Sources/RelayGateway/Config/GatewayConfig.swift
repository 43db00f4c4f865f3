import Foundation
public import RelayCore
import Yams

/// The whole configuration of a running gateway, as read from its YAML file.
///
/// Relative paths in the file are relative to the file's own folder (for the built-in
/// default, to the working directory).
public struct GatewayConfig: Sendable, Equatable {
    public var server: ServerSettings
    public var upstreams: [UpstreamSettings]
    public var models: [ModelSettings]
    /// The default pipeline: stage entries in order, outermost first.
    public var pipeline: [StageEntry]
    /// Named pipelines a model may choose instead of the default.
    public var pipelines: [String: [StageEntry]]
    /// Who may use which model, first match wins (nil: every caller may use every model).
    public var policy: [PolicyRule]?

    public init(
        server: ServerSettings = .init(),
        upstreams: [UpstreamSettings] = [],
        models: [ModelSettings] = [],
        pipeline: [StageEntry] = [StageEntry(stage: "passthrough")],
        pipelines: [String: [StageEntry]] = [:],
        policy: [PolicyRule]? = nil
    ) {
        self.server = server
        self.upstreams = upstreams
        self.models = models
        self.pipeline = pipeline
        self.pipelines = pipelines
        self.policy = policy
    }
}

/// Where and how the gateway listens.
public struct ServerSettings: Sendable, Equatable, Codable {
    /// The Unix socket the gateway listens on.
    public var socket: String
    /// The socket file's mode.
    public var socketMode: ConfigFileMode
    /// Requests with a larger body get 413.
    public var maxRequestBody: ConfigByteSize
    /// An upstream event larger than this ends the stream with an error.
    public var maxEventSize: ConfigByteSize
    /// A non-streaming upstream body larger than this is an error.
    public var maxResponseBody: ConfigByteSize
    /// Idle time after which a client connection with no request in flight is closed.
    public var idleTimeout: ConfigDuration
    /// From a request's first byte, how long the client may take to send all of it (head
    /// and body); a slower one gets 408 and is closed (a head that never ends, a body sent a
    /// byte a second).
    public var requestTimeout: ConfigDuration
    /// Client connections open at once; one more is answered 503 and closed, so that idle
    /// connections cannot starve the accept queue.
    public var maxConnections: Int
    /// A stream whose client takes none of its bytes for this long (it stopped reading; the
    /// buffers between are full) is dropped, logged, and its upstream request cancelled.
    public var writeTimeout: ConfigDuration
    /// After SIGTERM, how long streams in flight may run on before they are ended with an
    /// error event. Keep it below the unit's `TimeoutStopSec`.
    public var drainTimeout: ConfigDuration
    /// An append-only JSON-lines file with one usage record per request (off when nil).
    public var usageLedger: String?
    /// Where state that outlives the process is kept (the callers' token spend). Nil:
    /// `$STATE_DIRECTORY` when systemd sets it, else kept in memory only.
    public var stateDirectory: String?

    public init(
        socket: String = "/run/chatrelayd/gateway.sock",
        socketMode: ConfigFileMode = .init(0o660),
        maxRequestBody: ConfigByteSize = .init(bytes: 8 << 20),
        maxEventSize: ConfigByteSize = .init(bytes: 1 << 20),
        maxResponseBody: ConfigByteSize = .init(bytes: 64 << 20),
        idleTimeout: ConfigDuration = .init(.seconds(120)),
        requestTimeout: ConfigDuration = .init(.seconds(30)),
        maxConnections: Int = 4096,
        writeTimeout: ConfigDuration = .init(.seconds(60)),
        drainTimeout: ConfigDuration = .init(.seconds(20)),
        usageLedger: String? = nil,
        stateDirectory: String? = nil
    ) {
        self.requestTimeout = requestTimeout
        self.maxConnections = maxConnections
        self.writeTimeout = writeTimeout
        self.stateDirectory = stateDirectory
        self.socket = socket
        self.socketMode = socketMode
        self.maxRequestBody = maxRequestBody
        self.maxEventSize = maxEventSize
        self.maxResponseBody = maxResponseBody
        self.idleTimeout = idleTimeout
        self.drainTimeout = drainTimeout
        self.usageLedger = usageLedger
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case socket, socketMode = "socket_mode", maxRequestBody = "max_request_body", maxEventSize = "max_event_size"
        case maxResponseBody = "max_response_body", idleTimeout = "idle_timeout", drainTimeout = "drain_timeout"
        case usageLedger = "usage_ledger", stateDirectory = "state_directory"
        case requestTimeout = "request_timeout", maxConnections = "max_connections", writeTimeout = "write_timeout"
    }

    public init(from decoder: any Decoder) throws {
        let defaults = ServerSettings()
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        self.socket = try c.decodeIfPresent(String.self, forKey: .socket) ?? defaults.socket
        self.socketMode = try c.decodeIfPresent(ConfigFileMode.self, forKey: .socketMode) ?? defaults.socketMode
        self.maxRequestBody = try c.decodeIfPresent(ConfigByteSize.self, forKey: .maxRequestBody) ?? defaults.maxRequestBody
        self.maxEventSize = try c.decodeIfPresent(ConfigByteSize.self, forKey: .maxEventSize) ?? defaults.maxEventSize
        self.maxResponseBody = try c.decodeIfPresent(ConfigByteSize.self, forKey: .maxResponseBody) ?? defaults.maxResponseBody
        self.idleTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout) ?? defaults.idleTimeout
        self.drainTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .drainTimeout) ?? defaults.drainTimeout
        self.requestTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .requestTimeout) ?? defaults.requestTimeout
        self.maxConnections = try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? defaults.maxConnections
        self.writeTimeout = try c.decodeIfPresent(ConfigDuration.self, forKey: .writeTimeout) ?? defaults.writeTimeout
        guard self.maxConnections >= 1 else {
            throw DecodingError.dataCorruptedError(forKey: .maxConnections, in: c, debugDescription: "must be at least 1")
        }
        self.usageLedger = try c.decodeIfPresent(String.self, forKey: .usageLedger)
        self.stateDirectory = try c.decodeIfPresent(String.self, forKey: .stateDirectory)
    }
}

/// One upstream: an OpenAI-compatible HTTP(S) API, or recorded cassettes replayed locally.
public struct UpstreamSettings: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case openAICompatible = "openai-compatible"
        case cassette
    }

    public var name: String
    public var kind: Kind
    // openai-compatible
    /// The API base, up to and including `/v1` (requests go to `BASE/chat/completions`).
    public var baseURL: String?
    /// The API key: from this environment variable...
    public var apiKeyEnv: String?
    /// ...or this file (whitespace trimmed)...
    public var apiKeyFile: String?
    /// ...or this systemd credential (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).
    public var apiKeyCredential: String?
    /// Extra request headers sent to the upstream.
    public var headers: [String: String]
    /// Connections per host in the pool (each stream holds one for its whole life on HTTP/1.1).
    public var maxConnections: Int
    public var connectTimeout: ConfigDuration
    /// No response head within this long counts as a failed attempt (retried by `retry`).
    public var headTimeout: ConfigDuration
    /// No bytes from upstream for this long ends the stream, and so does nothing but SSE
    /// comment blocks for this long (see `CommentsOnlyTimeout`). Generous: reasoning models go quiet.
    public var idleTimeout: ConfigDuration
    /// The whole request, first byte to last.
    public var totalTimeout: ConfigDuration
    // cassette
    /// Cassette files or folders of them (`*.yaml`).
    public var cassettes: [String]
    /// `none` (as fast as the client reads), `recorded` (over each recording's duration), or a duration.
    public var pace: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, kind, baseURL = "base_url", apiKeyEnv = "api_key_env", apiKeyFile = "api_key_file"
        case apiKeyCredential = "api_key_credential", headers, maxConnections = "max_connections"
        case connectTimeout = "connect_timeout", headTimeout = "head_timeout", idleTimeout = "idle_timeout", totalTimeout = "total_timeout"
        case cassettes, pace
    }

    public init(
        name: String,
        kind: Kind,
        baseURL: String? = nil,
        apiKeyEnv: String? = nil,
        apiKeyFile: String? = nil,
        apiKeyCredential: String? = nil,
        headers: [String: String] = [:],
        maxConnections: Int = 1024,
        connectTimeout: ConfigDuration = .init(.seconds(10)),
        headTimeout: ConfigDuration = .init(.seconds(60)),
        idleTimeout: ConfigDuration = .init(.seconds(300)),
        totalTimeout: ConfigDuration = .init(.seconds(3600)),
        cassettes: [String] = [],
        pace: String = "none"
    ) {
        self.name = name
        self.kind = kind
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.apiKeyFile = apiKeyFile
        self.apiKeyCredential = apiKeyCredential
        self.headers = headers
        self.maxConnections = maxConnections
        self.connectTimeout = connectTimeout
        self.headTimeout = headTimeout
        self.idleTimeout = idleTimeout
        self.totalTimeout = totalTimeout
        self.cassettes = cassettes
        self.pace = pace
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        let kindText = try c.decode(String.self, forKey: .kind)
        guard let kind = Kind(rawValue: kindText) else {
            throw configFailure(decoder, "unknown upstream kind '\(kindText)' (known: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let d = UpstreamSettings(name: "", kind: kind)
        self.init(
            name: try c.decode(String.self, forKey: .name),
            kind: kind,
            baseURL: try c.decodeIfPresent(String.self, forKey: .baseURL),
            apiKeyEnv: try c.decodeIfPresent(String.self, forKey: .apiKeyEnv),
            apiKeyFile: try c.decodeIfPresent(String.self, forKey: .apiKeyFile),
            apiKeyCredential: try c.decodeIfPresent(String.self, forKey: .apiKeyCredential),
            headers: try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:],
            maxConnections: try c.decodeIfPresent(Int.self, forKey: .maxConnections) ?? d.maxConnections,
            connectTimeout: try c.decodeIfPresent(ConfigDuration.self, forKey: .connectTimeout) ?? d.connectTimeout,
            headTimeout: try c.decodeIfPresent(ConfigDuration.self, forKey: .headTimeout) ?? d.headTimeout,
            idleTimeout: try c.decodeIfPresent(ConfigDuration.self, forKey: .idleTimeout) ?? d.idleTimeout,
            totalTimeout: try c.decodeIfPresent(ConfigDuration.self, forKey: .totalTimeout) ?? d.totalTimeout,
            cassettes: try c.decodeIfPresent([String].self, forKey: .cassettes) ?? [],
            pace: try c.decodeIfPresent(String.self, forKey: .pace) ?? "none"
        )
    }
}

/// Which models the gateway serves and where each goes.
///
/// An entry names either one model (`name`, with optional `aliases`) or every model that
/// starts with `prefix`. Exact names win over prefixes; prefixes are tried in order.
public struct ModelSettings: Sendable, Equatable, Codable {
    public var name: String?
    public var prefix: String?
    public var aliases: [String]
    public var upstream: String
    /// The name the upstream knows the model by (default: the client's name).
    public var upstreamModel: String?
    /// For prefix routes: drop the prefix before sending upstream (`openai/gpt-4o` → `gpt-4o`).
    public var stripPrefix: Bool
    /// A named pipeline from `pipelines:` instead of the default one.
    public var pipeline: String?
    /// Where to go, in order, when the upstream fails (used by the `retry` stage).
    public var fallbacks: [FallbackSettings]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, prefix, aliases, upstream, upstreamModel = "upstream_model", stripPrefix = "strip_prefix", pipeline, fallbacks
    }

    public init(
        name: String? = nil,
        prefix: String? = nil,
        aliases: [String] = [],
        upstream: String,
        upstreamModel: String? = nil,
        stripPrefix: Bool = false,
        pipeline: String? = nil,
        fallbacks: [FallbackSettings] = []
    ) {
        self.name = name
        self.prefix = prefix
        self.aliases = aliases
        self.upstream = upstream
        self.upstreamModel = upstreamModel
        self.stripPrefix = stripPrefix
        self.pipeline = pipeline
        self.fallbacks = fallbacks
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        self.init(
            name: try c.decodeIfPresent(String.self, forKey: .name),
            prefix: try c.decodeIfPresent(String.self, forKey: .prefix),
            aliases: try c.decodeIfPresent([String].self, forKey: .aliases) ?? [],
            upstream: try c.decode(String.self, forKey: .upstream),
            upstreamModel: try c.decodeIfPresent(String.self, forKey: .upstreamModel),
            stripPrefix: try c.decodeIfPresent(Bool.self, forKey: .stripPrefix) ?? false,
            pipeline: try c.decodeIfPresent(String.self, forKey: .pipeline),
            fallbacks: try c.decodeIfPresent([FallbackSettings].self, forKey: .fallbacks) ?? []
        )
    }
}

/// An alternative for a model: another upstream, and the model name it knows (default: the same).
public struct FallbackSettings: Sendable, Equatable, Codable {
    public var upstream: String
    public var model: String?

    public init(upstream: String, model: String? = nil) {
        self.upstream = upstream
        self.model = model
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case upstream, model }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        self.init(upstream: try c.decode(String.self, forKey: .upstream), model: try c.decodeIfPresent(String.self, forKey: .model))
    }
}

/// One pipeline entry: a stage name and its options (every other key of the entry).
public struct StageEntry: Sendable, Equatable {
    public var stage: String
    public var options: [String: JSONValue]

    public init(stage: String, options: [String: JSONValue] = [:]) {
        self.stage = stage
        self.options = options
    }
}

extension StageEntry: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let name = try? container.decode(String.self) {
            self.init(stage: name)
            return
        }
        guard case .object(var members) = try container.decode(JSONValue.self) else {
            throw configFailure(decoder, "a pipeline entry is a stage name or a mapping with 'stage:'")
        }
        guard let name = members.removeValue(forKey: "stage")?.stringValue else {
            throw configFailure(decoder, "a pipeline entry needs 'stage: NAME'")
        }
        self.init(stage: name, options: members)
    }

    public func encode(to encoder: any Encoder) throws {
        var members = self.options
        members["stage"] = .string(self.stage)
        try JSONValue.object(members).encode(to: encoder)
    }
}

extension GatewayConfig: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case server, upstreams, models, pipeline, pipelines, policy
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try rejectUnknownKeys(decoder, known: CodingKeys.allCases.map(\.rawValue))
        self.init(
            server: try c.decodeIfPresent(ServerSettings.self, forKey: .server) ?? .init(),
            upstreams: try c.decodeIfPresent([UpstreamSettings].self, forKey: .upstreams) ?? [],
            models: try c.decodeIfPresent([ModelSettings].self, forKey: .models) ?? [],
            pipeline: try c.decodeIfPresent([StageEntry].self, forKey: .pipeline) ?? [StageEntry(stage: "passthrough")],
            pipelines: try c.decodeIfPresent([String: [StageEntry]].self, forKey: .pipelines) ?? [:],
            policy: try c.decodeIfPresent([PolicyRule].self, forKey: .policy)
        )
    }
}

/// Makes a typo in a key an error instead of a silently ignored setting.
func rejectUnknownKeys(_ decoder: any Decoder, known: [String]) throws {
    let all = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
    let unknown = all.filter { !known.contains($0) }
    guard unknown.isEmpty else {
        throw configFailure(decoder, "unknown key(s) \(unknown.sorted().joined(separator: ", ")) (known: \(known.joined(separator: ", ")))")
    }
}

/// A ``ConfigError`` that remembers where in the file it happened.
func configFailure(_ decoder: any Decoder, _ message: String) -> DecodingError {
    .dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: message, underlyingError: ConfigError(message)))
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
