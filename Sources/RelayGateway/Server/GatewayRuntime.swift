import Foundation
import RelayCore

/// One generation of configuration, built whole: the router with a pipeline folded around
/// each upstream. Requests take the generation current when they arrive and keep it to the
/// end, so a reload never changes a stream in flight.
///
/// A class: every request holds it in the async frames of its tasks for as long as it
/// lasts, and a reference is 8 bytes where the configuration is hundreds.
public final class GatewayRuntime: Sendable {
    public let config: GatewayConfig
    public let router: ModelRouter
    /// When this generation was built (seconds since 1970; `created` in `/v1/models`).
    public let createdAt: Int
    /// Where usage records are appended, when configured.
    let ledger: UsageLedger?

    init(
        config: GatewayConfig,
        clients: UpstreamClients,
        registry: StageRegistry = .gateway,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        opensLedger: Bool = true
    ) throws(ConfigError) {
        var upstreams: [String: any ChatUpstream] = [:]
        for settings in config.upstreams {
            switch settings.kind {
            case .cassette:
                upstreams[settings.name] = try CassetteUpstream(settings: settings, maximumEventSize: config.server.maxEventSize.bytes)
            case .openAICompatible:
                upstreams[settings.name] = OpenAICompatibleUpstream(
                    settings: settings,
                    target: clients.target(for: settings),
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
            // The pipeline ends at whichever upstream the context names: the model's own, or a
            // fallback the retry stage switched to.
            let upstreamsByName = upstreams
            let terminal: ChatHandler = { request, context in
                guard let upstream = upstreamsByName[context.upstreamName] else {
                    throw RelayError.internalError("Upstream '\(context.upstreamName)' is not configured.")
                }
                return try await upstream.send(request, context: context)
            }
            let defaultHandler = try makePipeline(config.pipeline).handler(around: terminal)
            var named: [String: ChatHandler] = [:]
            for (name, entries) in config.pipelines { named[name] = try makePipeline(entries).handler(around: terminal) }
            self.router = try ModelRouter(models: config.models) { model in
                guard upstreams[model.upstream] != nil else {
                    throw ConfigError("upstream '\(model.upstream)' is not defined")
                }
                return model.pipeline.flatMap { named[$0] } ?? defaultHandler
            }
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError("\(error)")
        }
        // `check-config` validates without creating or touching the ledger file.
        self.ledger = opensLedger ? try config.server.usageLedger.map { path throws(ConfigError) in try UsageLedger(path: path) } : nil
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
        lines += self.config.policy.map { $0.map(\.summary) } ?? ["policy: none (every caller may use every model)"]
        return lines.joined(separator: "\n")
    }
}
