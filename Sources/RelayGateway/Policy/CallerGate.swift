import Foundation
import Logging
import RelayCore
import Synchronization

/// The second gate after the socket's own mode and group: the config's `policy:` applied
/// to each chat request and to `GET /v1/models`, with the limits' state and its file.
///
/// The rules come from the configuration generation a request runs under; the counts
/// (``CallerLimits``) belong to the gateway and outlive reloads. Token spend is saved to
/// the state directory at most once per ``saveInterval`` while it changes, and once more
/// when the gateway stops; a crash loses at most that interval's spend, never the file.
final class CallerGate: Sendable {
    let limits: CallerLimits
    let store: TokenBudgetStore?
    private let logger: Logger
    /// Shortest time between two saves of the state file.
    let saveInterval: Duration
    private let saving = Mutex<(pending: Bool, running: Bool, lastError: String?)>((false, false, nil))
    /// Held from taking the snapshot to the rename, so an older snapshot never replaces a newer one.
    private let writing = Mutex(())
    /// Whether the log has said once that budgets live only in memory.
    private let warnedInMemory = Atomic<Bool>(false)

    init(config: GatewayConfig, environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger, saveInterval: Duration = .seconds(1)) {
        self.logger = logger
        self.saveInterval = saveInterval
        let directory = config.server.stateDirectory ?? Self.systemdStateDirectory(environment)
        var budgets: CallerLimits.Budgets?
        if let directory {
            let store = TokenBudgetStore(directory: directory)
            do {
                budgets = try store.load()
            } catch {
                let aside = store.setAside()
                logger.error("token budgets start from zero: \(error)\(aside.map { "; the file was moved to \($0)" } ?? "")")
            }
            self.store = store
        } else {
            self.store = nil
        }
        self.limits = CallerLimits(budgets: budgets)
    }

    /// The first folder of `$STATE_DIRECTORY` (systemd's `StateDirectory=`; a list when it names several).
    static func systemdStateDirectory(_ environment: [String: String]) -> String? {
        guard let value = environment["STATE_DIRECTORY"], let first = value.split(separator: ":").first, !first.isEmpty else { return nil }
        return String(first)
    }

    /// The rule for `caller`: the first that matches, nil when none does.
    static func rule(for caller: CallerIdentity?, in rules: [PolicyRule]) -> PolicyRule? {
        rules.first { $0.matches(caller) }
    }

    /// Lets a chat request for `model` start, or throws the OpenAI-shaped denial (and logs
    /// it with the rule's name). Without a `policy:` section every request may start.
    /// An admitted request must be ended with ``finish(_:)``.
    func admit(model: String, caller: CallerIdentity?, requestID: String, config: GatewayConfig, logger: inout Logger) throws(RelayError) {
        guard let rules = config.policy else { return }
        let key = caller?.key ?? "unknown"
        let shownModel = HTTPRequestHandler.printable(model)
        guard let rule = Self.rule(for: caller, in: rules) else {
            logger[metadataKey: "policy_rule"] = "none"
            throw self.deny(
                .permissionDenied("No policy rule lets caller \(key) use this gateway."),
                rule: "none", key: key, model: shownModel, logger: logger
            )
        }
        logger[metadataKey: "policy_rule"] = .string(rule.name)
        guard rule.allowsModel(named: PolicyModels.names(of: model, in: config.models)) else {
            throw self.deny(
                .permissionDenied("Caller \(key) may not use the model '\(shownModel)' (policy rule '\(rule.name)')."),
                rule: rule.name, key: key, model: shownModel, logger: logger
            )
        }
        if rule.tokensPerDay != nil, self.store == nil, !self.warnedInMemory.exchange(true, ordering: .relaxed) {
            self.logger.warning("token budgets are kept in memory only and start from zero at every restart: set server.state_directory (systemd sets $STATE_DIRECTORY)")
        }
        let tracked = rules.compactMap(\.requestsPerMinute).max() ?? 0
        switch self.limits.admit(key: key, rule: rule, requestID: requestID, trackedRequests: tracked, now: .now, date: Date()) {
        case .admitted:
            return
        case .rateLimited(let retryAfter):
            let limit = rule.requestsPerMinute ?? 0
            throw self.deny(
                .rateLimitExceeded(
                    "Rate limit reached for caller \(key): \(limit) requests per minute (policy rule '\(rule.name)'). Try again in \(retryAfter) s.",
                    retryAfter: retryAfter
                ),
                rule: rule.name, key: key, model: shownModel, logger: logger
            )
        case .tooManyInFlight:
            let limit = rule.concurrentStreams ?? 0
            throw self.deny(
                .rateLimitExceeded(
                    "Too many requests in flight for caller \(key): at most \(limit) at once (policy rule '\(rule.name)'). Try again when one has finished.",
                    retryAfter: 1
                ),
                rule: rule.name, key: key, model: shownModel, logger: logger
            )
        case .quotaSpent(let spent, let retryAfter):
            let limit = rule.tokensPerDay ?? 0
            throw self.deny(
                .insufficientQuota(
                    "Caller \(key) has spent its daily budget of \(limit) tokens (\(spent) today, policy rule '\(rule.name)'); it renews at 00:00 UTC.",
                    retryAfter: retryAfter
                ),
                rule: rule.name, key: key, model: shownModel, logger: logger
            )
        }
    }

    private func deny(_ error: RelayError, rule: String, key: String, model: String, logger: Logger) -> RelayError {
        logger.warning(
            "policy denied \(error.code ?? "request") to \(key) for model \(model) by rule '\(rule)'",
            metadata: ["policy_rule": .string(rule), "denial": .string(error.code ?? ""), "caller": .string(key)]
        )
        return error
    }

    /// A chat request is over (its usage record is complete): it stops counting as in
    /// flight, and its tokens count against its caller's daily budget.
    func finish(_ record: UsageRecord) {
        let key = record.caller?.key ?? "unknown"
        let changed = self.limits.finish(requestID: record.requestID, key: key, tokens: CallerLimits.tokens(of: record.tokens), date: Date())
        if changed { self.scheduleSave() }
    }

    /// The model ids `caller` may use, out of `ids` (all of them without a policy).
    func allowedModels(_ ids: [String], caller: CallerIdentity?, config: GatewayConfig) -> [String] {
        guard let rules = config.policy else { return ids }
        guard let rule = Self.rule(for: caller, in: rules) else { return [] }
        return ids.filter { rule.allowsModel(named: PolicyModels.names(of: $0, in: config.models)) }
    }

    /// Saves the spend now if it changed since the last save (when the gateway stops).
    func flush() {
        let pending = self.saving.withLock { state -> Bool in
            defer { state.pending = false }
            return state.pending
        }
        if pending { self.saveNow() }
    }

    private func scheduleSave() {
        guard self.store != nil else { return }
        let start = self.saving.withLock { state -> Bool in
            state.pending = true
            guard !state.running else { return false }
            state.running = true
            return true
        }
        guard start else { return }
        Task {
            while self.saving.withLock({ state -> Bool in
                guard state.pending else {
                    state.running = false
                    return false
                }
                state.pending = false
                return true
            }) {
                self.saveNow()
                try? await Task.sleep(for: self.saveInterval)
            }
        }
    }

    private func saveNow() {
        guard let store = self.store else { return }
        do {
            try self.writing.withLock { _ throws(TokenBudgetStore.Failure) in try store.save(self.limits.budgets()) }
            let recovered = self.saving.withLock { state -> Bool in
                defer { state.lastError = nil }
                return state.lastError != nil
            }
            if recovered { self.logger.info("token budgets saved again to \(store.path)") }
        } catch {
            let first = self.saving.withLock { state -> Bool in
                defer { state.lastError = error.description }
                return state.lastError != error.description
            }
            if first { self.logger.error("cannot save token budgets: \(error)") }
        }
    }
}
