import RelayCore

extension ConfigLoader {
    /// Checks the `policy:` list: named rules, sensible limits, a rule that matches every
    /// caller only at the end, model names that something serves, and token budgets only
    /// where the `usage` stage counts tokens.
    static func validatePolicy(_ config: GatewayConfig) throws(ConfigError) {
        guard let rules = config.policy else { return }
        guard !rules.isEmpty else {
            throw ConfigError("policy: lists no rule (leave the section out to let every caller use every model)")
        }
        var names = Set<String>()
        for (index, rule) in rules.enumerated() {
            guard !rule.name.isEmpty else { throw ConfigError("policy[\(index)]: 'name' is missing or empty") }
            let place = "policy[\(index)] '\(rule.name)'"
            guard names.insert(rule.name).inserted else { throw ConfigError("\(place): the name is used twice") }
            for (key, patterns) in [("user", rule.users), ("group", rule.groups), ("unit", rule.units)] where patterns.contains(where: \.isEmpty) {
                throw ConfigError("\(place): an empty '\(key)' pattern")
            }
            for (key, value) in [("requests_per_minute", rule.requestsPerMinute), ("concurrent_streams", rule.concurrentStreams), ("tokens_per_day", rule.tokensPerDay)] {
                if let value, value < 1 { throw ConfigError("\(place): '\(key)' must be at least 1 (leave it out for no limit)") }
            }
            if rule.matchesEveryone, index < rules.count - 1 {
                let next = rules[index + 1]
                throw ConfigError(
                    "\(place) matches every caller (it has no user, group or unit), so policy[\(index + 1)] '\(next.name)' after it can never apply; put it last"
                )
            }
            for model in rule.models ?? [] {
                guard !model.isEmpty else { throw ConfigError("\(place): an empty model name") }
                if !PolicyModels.isGlob(model), !PolicyModels.isServed(model, by: config.models) {
                    throw ConfigError("\(place): model '\(model)' is not served (no entry under 'models' has that name, alias or prefix)")
                }
            }
            if rule.tokensPerDay != nil, let pipeline = PolicyModels.pipelineWithoutUsage(config) {
                throw ConfigError(
                    "\(place): 'tokens_per_day' counts tokens with the 'usage' stage, but \(pipeline) has none (add '- stage: usage')"
                )
            }
        }
    }
}

/// How the policy sees the configured models.
enum PolicyModels {
    static func isGlob(_ pattern: String) -> Bool {
        pattern.contains { $0 == "*" || $0 == "?" || $0 == "[" }
    }

    /// Whether some entry under `models:` serves `name` (as name, alias or by prefix).
    static func isServed(_ name: String, by models: [ModelSettings]) -> Bool {
        models.contains { model in
            model.name == name || model.aliases.contains(name) || model.prefix.map { name.hasPrefix($0) && name.count > $0.count } == true
        }
    }

    /// Every name `requested` goes by: itself first, then the name and aliases of the
    /// configured model it names exactly (prefix routes have no other names).
    static func names(of requested: String, in models: [ModelSettings]) -> [String] {
        guard let model = models.first(where: { $0.name == requested || $0.aliases.contains(requested) }) else { return [requested] }
        return [requested] + ([model.name].compactMap { $0 } + model.aliases).filter { $0 != requested }
    }

    /// A pipeline some model runs through that has no `usage` stage, named for a message.
    static func pipelineWithoutUsage(_ config: GatewayConfig) -> String? {
        func counts(_ entries: [StageEntry]) -> Bool { entries.contains { $0.stage == "usage" } }
        let usesDefault = config.models.isEmpty || config.models.contains { $0.pipeline == nil }
        if usesDefault, !counts(config.pipeline) { return "the default 'pipeline'" }
        for name in Set(config.models.compactMap(\.pipeline)).sorted() where !counts(config.pipelines[name] ?? []) {
            return "pipeline '\(name)'"
        }
        return nil
    }
}
