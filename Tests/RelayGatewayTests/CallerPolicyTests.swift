import Foundation
import Logging
import RelayCore
@testable import RelayGateway
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The caller policy without a daemon: who a rule matches, which models it allows, the
/// `policy:` section's checks, the limits' arithmetic with a hand-driven clock, the token
/// budget file, and the ids and units read for a caller.
@Suite("Caller policy: rules, limits, budgets, identity")
struct CallerPolicyTests {
    static let alice = CallerIdentity(
        uid: 1001, gid: 1001, pid: 42, user: "alice", group: "alice",
        supplementaryGroups: [.init(id: 27, name: "sudo"), .init(id: 2000, name: "ml-team"), .init(id: 3000)]
    )
    static let service = CallerIdentity(uid: 998, gid: 998, pid: 43, user: "svc-bot", group: "svc-bot", unit: "app-summarize.service")
    static let userService = CallerIdentity(
        uid: 1001, gid: 1001, pid: 44, user: "alice", group: "alice", unit: "user@1001.service", userUnit: "app-summarize.service"
    )

    // MARK: matching

    @Test("user, group (primary or supplementary, by name or id) and unit globs; all given matchers must match")
    func matching() {
        #expect(PolicyRule(name: "r", users: ["alice"]).matches(Self.alice))
        #expect(PolicyRule(name: "r", users: ["al*"]).matches(Self.alice))
        #expect(PolicyRule(name: "r", users: ["1001"]).matches(Self.alice))
        #expect(!PolicyRule(name: "r", users: ["bob", "carol"]).matches(Self.alice))
        #expect(PolicyRule(name: "r", groups: ["alice"]).matches(Self.alice), "the primary group")
        #expect(PolicyRule(name: "r", groups: ["ml-*"]).matches(Self.alice), "a supplementary group by glob")
        #expect(PolicyRule(name: "r", groups: ["3000"]).matches(Self.alice), "a supplementary group without a name, by gid")
        #expect(!PolicyRule(name: "r", groups: ["docker"]).matches(Self.alice))
        #expect(PolicyRule(name: "r", units: ["app-*.service"]).matches(Self.service))
        #expect(!PolicyRule(name: "r", units: ["app-*.service"]).matches(Self.alice), "no unit, no match")
        #expect(PolicyRule(name: "r", users: ["svc-bot"], units: ["app-*.service"]).matches(Self.service))
        #expect(!PolicyRule(name: "r", users: ["alice"], units: ["app-*.service"]).matches(Self.service), "every matcher must match")
        #expect(PolicyRule(name: "default").matches(Self.alice))
        #expect(PolicyRule(name: "default").matches(nil), "a rule without matchers matches even an unknown caller")
        #expect(!PolicyRule(name: "r", users: ["*"]).matches(nil))
    }

    @Test("a unit rule never matches a user's own service of the same name")
    func userUnitsDoNotMatchUnitRules() {
        #expect(!PolicyRule(name: "r", units: ["app-*.service"]).matches(Self.userService))
        #expect(Self.userService.key == "alice", "a user's services count as the user")
    }

    @Test("first match wins")
    func firstMatch() {
        let rules = [
            PolicyRule(name: "ml", groups: ["ml-team"], models: ["gpt-*"]),
            PolicyRule(name: "alice", users: ["alice"], models: []),
            PolicyRule(name: "default", models: ["grok-4-fast"]),
        ]
        #expect(CallerGate.rule(for: Self.alice, in: rules)?.name == "ml")
        #expect(CallerGate.rule(for: Self.service, in: rules)?.name == "default")
        #expect(CallerGate.rule(for: Self.service, in: Array(rules.prefix(2))) == nil)
    }

    @Test("models: names and globs, matched against every name of the model; absent means all, empty means none")
    func models() {
        let config = GatewayConfig(models: [
            ModelSettings(name: "grok-4-fast", aliases: ["grok"], upstream: "x"),
            ModelSettings(prefix: "openrouter/", upstream: "o"),
        ])
        func allows(_ rule: PolicyRule, _ model: String) -> Bool { rule.allowsModel(named: PolicyModels.names(of: model, in: config.models)) }
        let aliasOnly = PolicyRule(name: "r", models: ["grok"])
        #expect(allows(aliasOnly, "grok"))
        #expect(allows(aliasOnly, "grok-4-fast"), "an alias and its model are one model")
        let globs = PolicyRule(name: "r", models: ["openrouter/*", "gpt-4o-*"])
        #expect(allows(globs, "openrouter/meta/llama"))
        #expect(allows(globs, "gpt-4o-mini"))
        #expect(!allows(globs, "grok"))
        #expect(allows(PolicyRule(name: "r"), "anything"))
        #expect(!allows(PolicyRule(name: "r", models: []), "grok"))
    }

    @Test("the caller key: the user, or a system service and its user")
    func keys() {
        #expect(Self.alice.key == "alice")
        #expect(Self.service.key == "app-summarize.service (svc-bot)")
        #expect(CallerIdentity(uid: 4242, gid: 4242, pid: 1).key == "uid:4242")
        #expect(CallerIdentity(uid: 1001, gid: 1001, pid: 1, user: "alice", unit: "session-3.scope").key == "alice")
    }

    // MARK: configuration

    static func config(_ policy: String, pipeline: String = "[usage]") -> String {
        """
        upstreams:
          - {name: recorded, kind: cassette, cassettes: [cassettes]}
        models:
          - {name: grok-4-fast, aliases: [grok], upstream: recorded}
          - {prefix: "openrouter/", upstream: recorded}
        pipeline: \(pipeline)
        \(policy)
        """
    }

    static func parse(_ yaml: String) throws(ConfigError) -> GatewayConfig {
        try ConfigLoader.parse(yaml: yaml, baseDirectory: "/etc/chatrelayd")
    }

    @Test("a policy section parses: one pattern or a list, limits, and shows in check-config's summary")
    func parses() throws {
        let config = try Self.parse(Self.config("""
            policy:
              - name: summarizer
                unit: "app-summarize*.service"
                models: [grok, "openrouter/*"]
                requests_per_minute: 60
                concurrent_streams: 4
                tokens_per_day: 200000
              - name: ml
                group: [ml-team, 2000]
              - name: default
                models: []
            """))
        let rules = try #require(config.policy)
        #expect(rules.count == 3)
        #expect(rules[0] == PolicyRule(
            name: "summarizer", units: ["app-summarize*.service"], models: ["grok", "openrouter/*"],
            requestsPerMinute: 60, concurrentStreams: 4, tokensPerDay: 200_000
        ))
        #expect(rules[1].groups == ["ml-team", "2000"])
        #expect(rules[1].models == nil)
        #expect(rules[2].models == [])
        #expect(rules[0].summary == "policy summarizer: unit app-summarize*.service -> grok, openrouter/* (60/min, 4 at once, 200000 tokens/day)")
        #expect(rules[2].summary == "policy default: every caller -> no model")
        #expect(try Self.parse(Self.config("")).policy == nil, "no section: no policy")
    }

    @Test("state_directory is resolved against the config's folder")
    func stateDirectory() throws {
        let config = try Self.parse(Self.config("server: {state_directory: state}"))
        #expect(config.server.stateDirectory == "/etc/chatrelayd/state")
    }

    @Test(
        "a bad policy is refused with a message that names the rule",
        arguments: [
            ("policy: []", "policy: lists no rule"),
            ("policy:\n  - {models: [grok]}", "policy[0]: 'name' is missing or empty"),
            ("policy:\n  - {name: a, user: x}\n  - {name: a}", "policy[1] 'a': the name is used twice"),
            ("policy:\n  - {name: a, usr: x}", "policy[0]: unknown key(s) usr"),
            ("policy:\n  - {name: a, user: \"\"}", "policy[0] 'a': an empty 'user' pattern"),
            ("policy:\n  - {name: a, requests_per_minute: 0}", "policy[0] 'a': 'requests_per_minute' must be at least 1"),
            ("policy:\n  - {name: a, concurrent_streams: -1}", "policy[0] 'a': 'concurrent_streams' must be at least 1"),
            ("policy:\n  - {name: all}\n  - {name: ml, group: ml}", "policy[0] 'all' matches every caller (it has no user, group or unit), so policy[1] 'ml' after it can never apply"),
            ("policy:\n  - {name: a, models: [gpt-5]}", "policy[0] 'a': model 'gpt-5' is not served"),
            ("policy:\n  - {name: a, models: [grok, \"openrouter/x\", \"gpt-*\"], tokens_per_day: nope}", "policy[0].tokens_per_day"),
        ]
    )
    func refused(_ policy: String, _ message: String) {
        #expect {
            try Self.parse(Self.config(policy))
        } throws: { error in
            (error as? ConfigError)?.description.contains(message) == true
        }
    }

    @Test("tokens_per_day needs the usage stage in every pipeline a model runs through")
    func budgetsNeedUsage() throws {
        #expect(throws: ConfigError.self) {
            try Self.parse(Self.config("policy:\n  - {name: a, tokens_per_day: 10}", pipeline: "[passthrough]"))
        }
        do {
            _ = try Self.parse(Self.config("policy:\n  - {name: a, tokens_per_day: 10}", pipeline: "[passthrough]"))
        } catch {
            #expect(error.description.contains("policy[0] 'a': 'tokens_per_day' counts tokens with the 'usage' stage, but the default 'pipeline' has none"))
        }
        _ = try Self.parse(Self.config("policy:\n  - {name: a, tokens_per_day: 10}"))
    }

    // MARK: limits

    static let start = ContinuousClock.now
    static let noon = Date(timeIntervalSince1970: 1_780_000_000)  // 2026-05-28 20:26:40 UTC

    @Test("requests_per_minute: the next request waits until the oldest of the last minute is a minute old")
    func requestsPerMinute() {
        let limits = CallerLimits(date: Self.noon)
        let rule = PolicyRule(name: "r", requestsPerMinute: 2)
        func admit(_ id: String, at seconds: Double, key: String = "alice") -> CallerLimits.Decision {
            let decision = limits.admit(key: key, rule: rule, requestID: id, trackedRequests: 2, now: Self.start + .seconds(seconds), date: Self.noon)
            limits.finish(requestID: id, key: key, tokens: 0, date: Self.noon)
            return decision
        }
        #expect(admit("1", at: 0) == .admitted)
        #expect(admit("2", at: 10) == .admitted)
        #expect(admit("3", at: 20) == .rateLimited(retryAfter: 40))
        #expect(admit("4", at: 59.5) == .rateLimited(retryAfter: 1))
        #expect(admit("5", at: 20, key: "bob") == .admitted, "limits are per caller")
        #expect(admit("6", at: 60) == .admitted)
        #expect(admit("7", at: 61) == .rateLimited(retryAfter: 9))
    }

    @Test("a reload that lowers requests_per_minute applies to the requests already counted")
    func lowerRateAtOnce() {
        let limits = CallerLimits(date: Self.noon)
        for index in 0..<5 {
            let decision = limits.admit(key: "alice", rule: PolicyRule(name: "loose", requestsPerMinute: 100), requestID: "\(index)", trackedRequests: 100, now: Self.start + .seconds(Double(index)), date: Self.noon)
            #expect(decision == .admitted)
        }
        let strict = PolicyRule(name: "strict", requestsPerMinute: 3)
        #expect(limits.admit(key: "alice", rule: strict, requestID: "x", trackedRequests: 3, now: Self.start + .seconds(10), date: Self.noon) == .rateLimited(retryAfter: 52))
    }

    @Test("concurrent_streams: in flight until finished; finishing twice counts once")
    func concurrency() {
        let limits = CallerLimits(date: Self.noon)
        let rule = PolicyRule(name: "r", concurrentStreams: 2)
        func admit(_ id: String) -> CallerLimits.Decision {
            limits.admit(key: "alice", rule: rule, requestID: id, trackedRequests: 0, now: Self.start, date: Self.noon)
        }
        #expect(admit("a") == .admitted)
        #expect(admit("b") == .admitted)
        #expect(admit("c") == .tooManyInFlight)
        #expect(limits.inFlight("alice") == 2)
        limits.finish(requestID: "a", key: "alice", tokens: 0, date: Self.noon)
        limits.finish(requestID: "a", key: "alice", tokens: 0, date: Self.noon)
        #expect(limits.inFlight("alice") == 1)
        #expect(admit("d") == .admitted)
        #expect(admit("e") == .tooManyInFlight)
    }

    @Test("tokens_per_day: admitted while below the budget, denied once spent, renewed at UTC midnight")
    func tokensPerDay() {
        let limits = CallerLimits(date: Self.noon)
        let rule = PolicyRule(name: "r", tokensPerDay: 300)
        func admit(_ id: String, date: Date = Self.noon) -> CallerLimits.Decision {
            limits.admit(key: "alice", rule: rule, requestID: id, trackedRequests: 0, now: Self.start, date: date)
        }
        #expect(admit("1") == .admitted)
        limits.finish(requestID: "1", key: "alice", tokens: 250, date: Self.noon)
        #expect(admit("2") == .admitted, "below the budget: the request that crosses it is let through")
        limits.finish(requestID: "2", key: "alice", tokens: 128, date: Self.noon)
        let untilMidnight = CallerLimits.secondsUntilNextDay(from: Self.noon)
        #expect(untilMidnight == 86_400 - (20 * 3600 + 26 * 60 + 40))
        #expect(admit("3") == .quotaSpent(spent: 378, retryAfter: untilMidnight))
        #expect(limits.budgets(date: Self.noon) == .init(day: "2026-05-28", tokens: ["alice": 378]))
        let tomorrow = Self.noon.addingTimeInterval(Double(untilMidnight))
        #expect(admit("4", date: tomorrow) == .admitted)
        #expect(limits.budgets(date: tomorrow) == .init(day: "2026-05-29", tokens: [:]))
    }

    @Test("spend saved for an earlier day is not carried into today")
    func oldBudgetsAreDropped() {
        let limits = CallerLimits(budgets: .init(day: "2026-05-27", tokens: ["alice": 10]), date: Self.noon)
        #expect(limits.budgets(date: Self.noon).tokens.isEmpty)
        let kept = CallerLimits(budgets: .init(day: "2026-05-28", tokens: ["alice": 10]), date: Self.noon)
        #expect(kept.budgets(date: Self.noon).tokens == ["alice": 10])
    }

    @Test("tokens counted: prompt plus completion, or the total when that is all there is")
    func tokensCounted() {
        #expect(CallerLimits.tokens(of: TokenUsage(prompt: 126, completion: 2, reasoning: 123, total: 251)) == 128)
        #expect(CallerLimits.tokens(of: TokenUsage(total: 40)) == 40)
        #expect(CallerLimits.tokens(of: TokenUsage()) == 0)
    }

    // MARK: the budget file

    @Test("the budget file: saved atomically, read back, an unreadable one set aside")
    func budgetFile() throws {
        let directory = try TestPaths.temporaryDirectory("budgets")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = TokenBudgetStore(directory: directory + "/state")
        #expect(try store.load() == nil)
        let budgets = CallerLimits.Budgets(day: "2026-05-28", tokens: ["alice": 378, "app-x.service (svc)": 12])
        try store.save(budgets)
        #expect(try store.load() == budgets)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/state") == ["token-budgets.json"], "no temporary file left")
        try "{\"version\":1,\"day\":\"2026-05-28\",\"tok".write(toFile: store.path, atomically: false, encoding: .utf8)
        #expect(throws: TokenBudgetStore.Failure.self) { try store.load() }
        #expect(store.setAside() == store.path + ".unreadable")
        #expect(try store.load() == nil)
    }

    @Test("a gateway picks the spend up from the state directory, and saves it when it stops")
    func gateKeepsSpend() throws {
        let directory = try TestPaths.temporaryDirectory("gate")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let today = CallerLimits.day(of: Date())
        try TokenBudgetStore(directory: directory).save(.init(day: today, tokens: ["alice": 99]))
        let logger = Logger(label: "test")
        let gate = CallerGate(config: GatewayConfig(), environment: ["STATE_DIRECTORY": directory + ":/elsewhere"], logger: logger, saveInterval: .seconds(3600))
        #expect(gate.store?.directory == directory)
        #expect(gate.limits.budgets().tokens == ["alice": 99])
        var record = UsageRecord(requestID: "r1", requestedModel: "grok", upstream: "x", stream: true, caller: Self.alice)
        record.tokens = TokenUsage(prompt: 1, completion: 2)
        gate.finish(record)
        gate.flush()
        #expect(try TokenBudgetStore(directory: directory).load()?.tokens == ["alice": 102])
        #expect(CallerGate(config: GatewayConfig(), environment: [:], logger: logger).store == nil)
    }

    // MARK: identity

    @Test("units from /proc/PID/cgroup: the system unit, and the user unit inside a user's manager")
    func units() {
        func units(_ path: String) -> (String?, String?) {
            let parsed = PeerCredentials.systemdUnits(cgroupFile: "0::\(path)\n")
            return (parsed.unit, parsed.userUnit)
        }
        #expect(units("/system.slice/app-summarize.service") == ("app-summarize.service", nil))
        #expect(units("/system.slice/system-app.slice/app@2.service") == ("app@2.service", nil))
        #expect(units("/system.slice/docker.service/container/x.scope") == ("docker.service", nil), "a delegated service's sub-cgroups")
        #expect(units("/user.slice/user-1001.slice/session-3.scope") == ("session-3.scope", nil))
        #expect(units("/user.slice/user-1001.slice/user@1001.service/app.slice/app-summarize.service") == ("user@1001.service", "app-summarize.service"))
        #expect(units("/user.slice/user-1001.slice/user@1001.service/init.scope") == ("user@1001.service", "init.scope"))
        #expect(units("/") == (nil, nil))
        #expect(units("/docker/abc") == (nil, nil))
        let hybrid = "12:name=systemd:/system.slice/cron.service\n1:cpu:/\n"
        #expect(PeerCredentials.systemdUnits(cgroupFile: hybrid).unit == "cron.service")
    }

    @Test("supplementary groups from SO_PEERGROUPS' zero-padded buffer")
    func peerGroups() {
        var gids = InlineArray<256, UInt32>(repeating: 0)
        #expect(PeerCredentials.decodePeerGroups(gids) == [0], "called only when there is a group: all zeros is root's group")
        gids[0] = 0
        gids[1] = 27
        gids[2] = 2000
        #expect(PeerCredentials.decodePeerGroups(gids) == [0, 27, 2000])
        gids[0] = 5
        #expect(PeerCredentials.decodePeerGroups(gids) == [5, 27, 2000])
    }

    @Test("/proc/PID/status: the effective uid and the groups")
    func procStatus() {
        let text = "Name:\tcurl\nUid:\t1001\t1002\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\nGroups:\t27 2000 \nNgid:\t0\n"
        #expect(CallerIdentityReader.procStatus(parsing: text) == .init(effectiveUID: 1002, groups: [27, 2000]))
        #expect(CallerIdentityReader.procStatus(parsing: "Uid:\t0\t0\t0\t0\nGroups:\t\n").groups == [])
    }

    @Test("this process as a caller: names from the user database, its own units")
    func ownIdentity() {
        let own = CallerIdentityReader.identity(uid: getuid(), gid: getgid(), pid: getpid(), groups: nil, pidfd: nil)
        #expect(own.user == CallerIdentityReader.userName(getuid()))
        #expect(own.user != nil)
        #expect(own.unit == PeerCredentials.systemdUnits(pid: getpid()).unit)
        let stranger = CallerIdentityReader.identity(uid: getuid() &+ 12345, gid: getgid(), pid: getpid(), groups: [], pidfd: nil)
        #expect(stranger.unit == nil && stranger.userUnit == nil, "/proc/PID of another uid is not believed")
    }

    // MARK: usage report

    @Test("the usage report adds up the ledger per caller and per model, in the period")
    func usageReport() throws {
        let directory = try TestPaths.temporaryDirectory("report")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        func line(_ ts: String, _ key: String?, _ model: String, _ status: Int, _ prompt: Int?, _ completion: Int?) -> String {
            let caller = key.map { #"{"uid":1001,"gid":1001,"pid":1,"unit":null,"key":"\#($0)"}"# } ?? "null"
            let tokens = #"{"prompt":\#(prompt.map(String.init) ?? "null"),"completion":\#(completion.map(String.init) ?? "null"),"total":null}"#
            return #"{"ts":"\#(ts)","caller":\#(caller),"model":"\#(model)","status":\#(status),"error":null,"tokens":\#(tokens)}"#
        }
        try [
            line("2026-05-28T10:00:00Z", "alice", "grok", 200, 126, 2),
            line("2026-05-28T11:00:00Z", "alice", "gpt-4o-mini", 200, 20, 2),
            line("2026-05-28T12:00:00Z", "alice", "grok", 429, nil, nil),
            line("2026-05-28T13:00:00Z", "app-x.service (svc)", "grok", 200, 1000, 500),
            line("2026-05-27T23:59:59Z", "alice", "grok", 200, 5, 5),
            #"{"uid":1001,"gid":1001,"pid":1,"unit":null,"user":"old"}"#,
            line("2026-05-28T14:00:00Z", nil, "grok", 403, nil, nil),
            "{\"ts\":\"2026-05-28T15:0",
        ].joined(separator: "\n").write(toFile: ledger, atomically: true, encoding: .utf8)
        let day = try UsageReport.period(day: "2026-05-28", since: nil)
        let byCaller = try UsageReport.read(ledger: ledger, from: day.from, to: day.to, by: .caller)
        #expect(byCaller.rows.map(\.caller) == ["app-x.service (svc)", "alice", "unknown"])
        #expect(byCaller.rows[1] == {
            var row = UsageReport.Row(caller: "alice")
            (row.requests, row.failed, row.promptTokens, row.completionTokens, row.tokens) = (3, 1, 146, 4, 150)
            return row
        }())
        #expect(byCaller.total.requests == 5)
        #expect(byCaller.total.tokens == 1650)
        #expect(byCaller.skippedLines == 2)
        let table = byCaller.table()
        #expect(table.contains("CALLER               REQUESTS  FAILED  PROMPT  COMPLETION  TOKENS"), "\(table)")
        #expect(table.contains("alice                       3       1     146           4     150"), "\(table)")
        #expect(table.contains("TOTAL                       5       2    1146         504    1650"), "\(table)")
        let byModel = try UsageReport.read(ledger: ledger, from: day.from, to: day.to, by: .model)
        #expect(byModel.rows.map(\.model) == ["grok", "gpt-4o-mini"])
        #expect(byModel.rows.map(\.requests) == [4, 1])
        let json = byModel.json()
        #expect(json["rows"]?.arrayValue?.first?["model"]?.stringValue == "grok")
        #expect(json["rows"]?.arrayValue?.first?["tokens"]?.intValue == 1628)
        #expect(json["total"]?["requests"]?.intValue == 5)
        #expect(json["from"]?.stringValue == "2026-05-28T00:00:00Z")
        let pairs = try UsageReport.read(ledger: ledger, from: day.from, to: day.to, by: .callerAndModel)
        #expect(pairs.rows.count == 4)
    }

    @Test("periods: a UTC day, the last DURATION, or today")
    func periods() throws {
        let now = Self.noon
        let since = try UsageReport.period(day: nil, since: "90m", now: now)
        #expect(since.from == now.addingTimeInterval(-5400))
        #expect(try UsageReport.period(day: nil, since: "7d", now: now).from == now.addingTimeInterval(-7 * 86_400))
        let today = try UsageReport.period(day: nil, since: nil, now: now)
        #expect(UsageReport.format(today.from) == "2026-05-28 00:00:00Z")
        #expect(today.to.timeIntervalSince(today.from) == 86_400)
        #expect(throws: ConfigError.self) { try UsageReport.period(day: "28.5.2026", since: nil) }
        #expect(throws: ConfigError.self) { try UsageReport.period(day: nil, since: "soon") }
    }
}
