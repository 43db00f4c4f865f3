import RelayCore

extension HTTPRequestHandler {
    /// `GET /v1/models` as `caller` sees it: only the models the policy lets it use.
    func modelList(for caller: CallerIdentity?) -> JSONValue {
        let all = self.modelList()
        let config = self.gateway.currentRuntime.config
        guard config.policy != nil, let entries = all["data"]?.arrayValue else { return all }
        let ids = entries.compactMap { $0["id"]?.stringValue }
        let allowed = Set(self.gateway.callerGate.allowedModels(ids, caller: caller, config: config))
        let kept = entries.filter { $0["id"]?.stringValue.map(allowed.contains) == true }
        return ["object": "list", "data": .array(kept)]
    }
}
