public import RelayCore

/// Where one model name goes: which upstream, under which name, through which pipeline.
public struct ModelRoute: Sendable {
    /// The upstream's configured name.
    public var upstreamName: String
    /// The model name to send upstream.
    public var upstreamModel: String
    /// The pipeline folded around the upstream, ready to call.
    public var handler: ChatHandler
    /// Where else to go when the upstream fails (the retry stage's business).
    public var fallbacks: [RouteTarget]
}

/// Maps the model names clients ask for onto routes: exact names and aliases first, then
/// prefixes in the order the config lists them.
public struct ModelRouter: Sendable {
    private var exact: [String: (settings: ModelSettings, handler: ChatHandler)] = [:]
    private var prefixes: [(settings: ModelSettings, handler: ChatHandler)] = []
    /// The names `GET /v1/models` lists, in config order, with their upstream.
    public private(set) var listedModels: [(id: String, upstream: String)] = []

    public init(models: [ModelSettings], handlerFor: (ModelSettings) throws -> ChatHandler) rethrows {
        for model in models {
            let handler = try handlerFor(model)
            if let name = model.name {
                for id in [name] + model.aliases {
                    self.exact[id] = (model, handler)
                    self.listedModels.append((id, model.upstream))
                }
            } else {
                self.prefixes.append((model, handler))
                for alias in model.aliases {
                    self.exact[alias] = (model, handler)
                }
            }
        }
    }

    /// The route for `model`, or nil when no entry serves it.
    public func route(for model: String) -> ModelRoute? {
        if let (settings, handler) = self.exact[model] {
            let upstreamModel = settings.upstreamModel ?? settings.name ?? model
            return ModelRoute(upstreamName: settings.upstream, upstreamModel: upstreamModel, handler: handler, fallbacks: Self.fallbacks(settings, upstreamModel))
        }
        for (settings, handler) in self.prefixes {
            guard let prefix = settings.prefix, model.hasPrefix(prefix) else { continue }
            let upstreamModel = settings.stripPrefix ? String(model.dropFirst(prefix.count)) : model
            guard !upstreamModel.isEmpty else { continue }
            return ModelRoute(upstreamName: settings.upstream, upstreamModel: upstreamModel, handler: handler, fallbacks: Self.fallbacks(settings, upstreamModel))
        }
        return nil
    }

    private static func fallbacks(_ settings: ModelSettings, _ upstreamModel: String) -> [RouteTarget] {
        settings.fallbacks.map { RouteTarget(upstream: $0.upstream, model: $0.model ?? upstreamModel) }
    }
}
