import AsyncHTTPClient
import Foundation
public import RelayCore

/// One generation of configuration, built whole: the router with a pipeline folded around
/// each upstream. Requests take the generation current when they arrive and keep it to the
/// end, so a reload never changes a stream in flight.
public struct GatewayRuntime: Sendable {
    public let config: GatewayConfig
    public let router: ModelRouter
    /// When this generation was built (seconds since 1970; `created` in `/v1/models`).
    public let createdAt: Int
    /// Where usage records are appended, when configured.
    let ledger: UsageLedger?

    public init(
        config: GatewayConfig,
        httpClient: HTTPClient,
        registry: StageRegistry = .builtIn,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) {
        var upstreams: [String: any ChatUpstream] = [:]
        for settings in config.upstreams {
            switch settings.kind {
            case .cassette:
                upstreams[settings.name] = try CassetteUpstream(settings: settings, maximumEventSize: config.server.maxEventSize.bytes)
            case .openAICompatible:
                upstreams[settings.name] = OpenAICompatibleUpstream(
                    settings: settings,
                    client: httpClient,
                    apiKey: APIKeySource.resolve(settings, environment: environment),
                    maximumEventSize: config.server.maxEventSize.bytes,
                    maximumBodySize: config.server.maxResponseBody.bytes
                )
            }
        }
        func makePipeline(_ entries: [StageEntry]) throws -> Pipeline {
            Pipeline(stages: try entries.map { try registry.makeStage(named: $0.stage, options: $0.options) })
        }
        do {
            let defaultPipeline = try makePipeline(config.pipeline)
            var named: [String: Pipeline] = [:]
            for (name, entries) in config.pipelines { named[name] = try makePipeline(entries) }
            self.router = try ModelRouter(models: config.models) { model in
                guard let upstream = upstreams[model.upstream] else {
                    throw ConfigError("upstream '\(model.upstream)' is not defined")
                }
                let pipeline = model.pipeline.flatMap { named[$0] } ?? defaultPipeline
                return pipeline.handler { request, context in try await upstream.send(request, context: context) }
            }
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("\(error)")
        }
        self.ledger = try config.server.usageLedger.map { path throws(ConfigError) in try UsageLedger(path: path) }
        self.config = config
        self.createdAt = Int(Date().timeIntervalSince1970)
    }

    /// A human summary of what this generation serves (for `check-config` and the log).
    public var summary: String {
        var lines: [String] = []
        lines.append("socket: \(self.config.server.socket) (mode \(self.config.server.socketMode))")
        for upstream in self.config.upstreams {
            switch upstream.kind {
            case .cassette:
                lines.append("upstream \(upstream.name): cassettes \(upstream.cassettes.joined(separator: ", ")) (pace \(upstream.pace))")
            case .openAICompatible:
                let key = upstream.apiKeyEnv.map { "key from $\($0)" } ?? upstream.apiKeyFile.map { "key from file \($0)" }
                    ?? upstream.apiKeyCredential.map { "key from credential \($0)" } ?? "no key"
                lines.append("upstream \(upstream.name): \(upstream.baseURL ?? "") (\(key), \(upstream.maxConnections) connections)")
            }
        }
        for model in self.config.models {
            let what = model.name.map { "model \($0)" } ?? "models \(model.prefix ?? "")*"
            let aliases = model.aliases.isEmpty ? "" : " (aliases: \(model.aliases.joined(separator: ", ")))"
            lines.append("\(what)\(aliases) -> \(model.upstream)\(model.upstreamModel.map { " as \($0)" } ?? "")")
        }
        lines.append("pipeline: " + self.config.pipeline.map(\.stage).joined(separator: " -> ") + " -> upstream")
        for (name, entries) in self.config.pipelines.sorted(by: { $0.key < $1.key }) {
            lines.append("pipeline \(name): " + entries.map(\.stage).joined(separator: " -> ") + " -> upstream")
        }
        return lines.joined(separator: "\n")
    }
}
