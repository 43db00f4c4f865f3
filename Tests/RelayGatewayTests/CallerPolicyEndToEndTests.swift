import Foundation
import RelayCore
@testable import RelayGateway
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The policy through the real daemon, with callers that really are different users: the
/// test creates users and groups, and curl runs as each of them (setpriv), so the daemon
/// sees them through `SO_PEERCRED`. The socket is mode 0666 here; the policy is the gate.
///
/// Needs root (to create users and drop to them); skipped otherwise.
@Suite(
    "Caller policy end to end, as different users",
    .serialized,
    .timeLimit(.minutes(2)),
    .enabled(if: TestAccounts.available, "needs root, useradd, groupadd and setpriv to connect as other users")
)
struct CallerPolicyEndToEndTests {
    static func config(policy: String, directory: String, loopbackPort: Int? = nil) -> String {
        let loop = loopbackPort.map { "\n  - {name: loop, kind: openai-compatible, base_url: \"http://127.0.0.1:\($0)/v1\"}" } ?? ""
        let loopModels = loopbackPort == nil ? "" : "\n  - {prefix: loop-, upstream: loop}"
        return """
            server:
              socket: SOCKET
              socket_mode: "0666"
              usage_ledger: \(directory)/usage.jsonl
              state_directory: \(directory)/state
            upstreams:
              - {name: recorded, kind: cassette, cassettes: [\(TestPaths.fixtureCassettes)]}\(loop)
            models:
              - {name: grok-4-fast, aliases: [grok], upstream: recorded}
              - {name: gpt-4o-mini, upstream: recorded}\(loopModels)
            pipeline: [usage]
            \(policy)
            """
    }

    static func chat(_ model: String, stream: Bool = false) -> String {
        GatewayEndToEndTests.chatBody(model: model, stream: stream)
    }

    static func modelIDs(_ response: CurlResponse) throws -> [String] {
        let json = try JSONValue(parsing: Array(response.body.utf8))
        return json["data"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
    }

    static func error(_ response: CurlResponse) throws -> (type: String?, code: String?, message: String) {
        let json = try JSONValue(parsing: Array(response.body.utf8))
        return (json["error"]?["type"]?.stringValue, json["error"]?["code"]?.stringValue, json["error"]?["message"]?.stringValue ?? "")
    }

    /// Runs `body` with a folder for the ledger and state, and the daemon's log on failure.
    static func withDirectory(_ body: (String) async throws -> Void) async throws {
        let directory = try TestPaths.temporaryDirectory("policy")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(directory)
    }

    static func withGateway(_ config: String, _ body: (GatewayProcess) async throws -> Void) async throws {
        let gateway = try await GatewayProcess.start(config: config, tag: "policy")
        do {
            try await body(gateway)
        } catch {
            Issue.record("daemon log:\n\(gateway.log)")
            throw error
        }
        #expect(try await gateway.stop() == 0)
    }

    @Test("each caller may use the models its rule names, sees only those in /v1/models, and is denied the rest with 403")
    func modelsPerCaller() async throws {
        let users: [(role: String, primary: String?, supplementary: [String])] = [
            ("alice", nil, []), ("bob", nil, ["ml"]), ("dave", "ml", []), ("carol", nil, []),
        ]
        try await TestAccounts.withAccounts(users: users, groups: ["ml"]) { accounts in
            try await Self.withDirectory { directory in
                let policy = """
                    policy:
                      - name: ml-team
                        group: \(accounts.group("ml"))
                      - name: alice-mini
                        user: \(accounts.user("alice").name)
                        models: [gpt-4o-mini]
                      - name: default
                        models: ["grok*"]
                    """
                try await Self.withGateway(Self.config(policy: policy, directory: directory)) { gateway in
                    let socket = gateway.socketPath
                    let alice = accounts.user("alice"), bob = accounts.user("bob"), dave = accounts.user("dave"), carol = accounts.user("carol")

                    #expect(try Self.modelIDs(await curl(as: alice, socket, "GET", "/v1/models")) == ["gpt-4o-mini"])
                    #expect(try Self.modelIDs(await curl(as: bob, socket, "GET", "/v1/models")) == ["grok-4-fast", "grok", "gpt-4o-mini"], "a supplementary group")
                    #expect(try Self.modelIDs(await curl(as: dave, socket, "GET", "/v1/models")) == ["grok-4-fast", "grok", "gpt-4o-mini"], "the primary group")
                    #expect(try Self.modelIDs(await curl(as: carol, socket, "GET", "/v1/models")) == ["grok-4-fast", "grok"])

                    let allowed = try await curl(as: alice, socket, "POST", "/v1/chat/completions", body: Self.chat("gpt-4o-mini"))
                    #expect(allowed.status == 200, "\(allowed.body)")
                    #expect(try JSONValue(parsing: Array(allowed.body.utf8))["object"]?.stringValue == "chat.completion")
                    let denied = try await curl(as: alice, socket, "POST", "/v1/chat/completions", body: Self.chat("grok-4-fast", stream: true))
                    #expect(denied.status == 403)
                    let error = try Self.error(denied)
                    #expect(error.type == "permission_error")
                    #expect(error.code == "permission_denied")
                    #expect(error.message == "Caller \(alice.name) may not use the model 'grok-4-fast' (policy rule 'alice-mini').")

                    #expect(try await curl(as: bob, socket, "POST", "/v1/chat/completions", body: Self.chat("grok-4-fast", stream: true)).status == 200)
                    #expect(try await curl(as: dave, socket, "POST", "/v1/chat/completions", body: Self.chat("gpt-4o-mini")).status == 200)
                    #expect(try await curl(as: carol, socket, "POST", "/v1/chat/completions", body: Self.chat("grok")).status == 200)
                    let carolDenied = try await curl(as: carol, socket, "POST", "/v1/chat/completions", body: Self.chat("gpt-4o-mini"))
                    #expect(carolDenied.status == 403)
                    #expect(try Self.error(carolDenied).message.contains("policy rule 'default'"))

                    let log = gateway.log
                    #expect(log.contains("policy denied permission_denied to \(alice.name) for model grok-4-fast by rule 'alice-mini'"), "\(log)")
                    #expect(log.contains("policy denied permission_denied to \(carol.name) for model gpt-4o-mini by rule 'default'"))
                    #expect(log.contains("caller_user=\(bob.name)") && log.contains("caller_groups=\(accounts.group("ml"))"), "\(log)")
                    #expect(log.contains("caller_group=\(accounts.group("ml"))") && log.contains("caller_user=\(dave.name)"))

                    let lines = try String(contentsOfFile: directory + "/usage.jsonl", encoding: .utf8).split(separator: "\n")
                    let records = try lines.map { try JSONValue(parsing: Array($0.utf8)) }
                    #expect(records.count == 6)
                    let bobs = try #require(records.first { $0["caller"]?["user"]?.stringValue == bob.name })
                    #expect(bobs["caller"]?["uid"]?.intValue == Int(bob.uid))
                    #expect(bobs["caller"]?["gid"]?.intValue == Int(bob.gid))
                    // setpriv --init-groups gives the user's own group as a supplementary one too
                    #expect(bobs["caller"]?["groups"]?.arrayValue?.contains(.string(accounts.group("ml"))) == true, "\(bobs)")
                    #expect(bobs["caller"]?["key"]?.stringValue == bob.name)
                    #expect(bobs["tokens"]?["prompt"]?.intValue == 126)
                }
            }
        }
    }

    @Test("requests_per_minute and concurrent_streams: 429 rate_limit_exceeded with Retry-After, per caller")
    func rateAndConcurrency() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let users: [(role: String, primary: String?, supplementary: [String])] = [("alice", nil, []), ("bob", nil, []), ("carol", nil, [])]
        try await TestAccounts.withAccounts(users: users) { accounts in
            try await Self.withDirectory { directory in
                let alice = accounts.user("alice"), bob = accounts.user("bob"), carol = accounts.user("carol")
                let policy = """
                    policy:
                      - {name: two-a-minute, user: \(alice.name), requests_per_minute: 2}
                      - {name: one-at-a-time, user: [\(bob.name), \(carol.name)], concurrent_streams: 1}
                      - {name: default}
                    """
                try await Self.withGateway(Self.config(policy: policy, directory: directory, loopbackPort: upstream.port)) { gateway in
                    let socket = gateway.socketPath
                    #expect(try await curl(as: alice, socket, "POST", "/v1/chat/completions", body: Self.chat("grok")).status == 200)
                    #expect(try await curl(as: alice, socket, "POST", "/v1/chat/completions", body: Self.chat("gpt-4o-mini")).status == 200)
                    let limited = try await curl(as: alice, socket, "POST", "/v1/chat/completions", body: Self.chat("grok"))
                    #expect(limited.status == 429)
                    let error = try Self.error(limited)
                    #expect(error.type == "requests")
                    #expect(error.code == "rate_limit_exceeded")
                    #expect(error.message.hasPrefix("Rate limit reached for caller \(alice.name): 2 requests per minute (policy rule 'two-a-minute')."))
                    let retryAfter = try #require(limited.headers["retry-after"].flatMap { Int($0) })
                    #expect(retryAfter >= 1 && retryAfter <= 60)
                    #expect(try await curl(as: bob, socket, "POST", "/v1/chat/completions", body: Self.chat("grok")).status == 200, "another caller is not limited")

                    // Bob's first stream stays open (the loopback trickles for a minute) ...
                    let stream = try Self.startCurl(as: bob, socket: socket, body: Self.chat("loop-slow", stream: true))
                    defer { kill(stream.processIdentifier, SIGKILL) }
                    #expect(await upstream.waitFor("request:loop-slow"))
                    // ... so a second one is refused at once.
                    let second = try await curl(as: bob, socket, "POST", "/v1/chat/completions", body: Self.chat("grok", stream: true))
                    #expect(second.status == 429)
                    let secondError = try Self.error(second)
                    #expect(secondError.code == "rate_limit_exceeded")
                    #expect(secondError.message.hasPrefix("Too many requests in flight for caller \(bob.name): at most 1 at once (policy rule 'one-at-a-time')."))
                    #expect(second.headers["retry-after"] == "1")
                    // SIGKILL: a test process may hand SIGTERM down ignored.
                    kill(stream.processIdentifier, SIGKILL)
                    _ = try await onOwnThread { stream.waitUntilExit() }

                    // A request no longer counts once its client has seen its end.
                    for _ in 0..<3 {
                        #expect(try await curl(as: carol, socket, "POST", "/v1/chat/completions", body: Self.chat("grok-4-fast", stream: true)).status == 200)
                    }
                    #expect(gateway.log.contains("policy denied rate_limit_exceeded to \(alice.name) for model grok by rule 'two-a-minute'"))
                    #expect(gateway.log.contains("policy denied rate_limit_exceeded to \(bob.name) for model grok by rule 'one-at-a-time'"))
                }
            }
        }
    }

    /// curl as `user` in the background, for a stream that must stay open.
    static func startCurl(as user: TestAccounts.User, socket: String, body: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = TestAccounts.asUser(user, [
            TestPaths.curl, "-sS", "-N", "-o", "/dev/null", "--unix-socket", socket,
            "-H", "Content-Type: application/json", "--data-binary", body, "http://localhost/v1/chat/completions",
        ])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("tokens_per_day: 429 insufficient_quota once spent, still spent after a restart, lifted at once by a reload; chatrelayd usage adds it up")
    func budgets() async throws {
        try await TestAccounts.withAccounts(users: [("alice", nil, []), ("bob", nil, [])]) { accounts in
            try await Self.withDirectory { directory in
                let alice = accounts.user("alice"), bob = accounts.user("bob")
                func policy(_ budget: Int) -> String {
                    """
                    policy:
                      - {name: small-budget, user: \(alice.name), tokens_per_day: \(budget)}
                      - {name: default}
                    """
                }
                let chat = Self.chat("grok-4-fast", stream: true)  // the seed: 126 prompt + 2 completion tokens
                var gateway = try await GatewayProcess.start(config: Self.config(policy: policy(300), directory: directory), tag: "policy")
                for _ in 0..<3 {
                    #expect(try await curl(as: alice, gateway.socketPath, "POST", "/v1/chat/completions", body: chat).status == 200)
                }
                let spent = try await curl(as: alice, gateway.socketPath, "POST", "/v1/chat/completions", body: chat)
                #expect(spent.status == 429)
                let error = try Self.error(spent)
                #expect(error.type == "insufficient_quota")
                #expect(error.code == "insufficient_quota")
                #expect(error.message == "Caller \(alice.name) has spent its daily budget of 300 tokens (384 today, policy rule 'small-budget'); it renews at 00:00 UTC.")
                let untilMidnight = try #require(spent.headers["retry-after"].flatMap { Int($0) })
                #expect(untilMidnight >= 1 && untilMidnight <= 86_400)
                #expect(try await curl(as: bob, gateway.socketPath, "POST", "/v1/chat/completions", body: chat).status == 200)
                #expect(gateway.log.contains("policy denied insufficient_quota to \(alice.name) for model grok-4-fast by rule 'small-budget'"))

                // Stop and start again on the same state directory: the spend is still there.
                #expect(try await gateway.stop() == 0)
                let saved = try #require(try TokenBudgetStore(directory: directory + "/state").load())
                #expect(saved.tokens[alice.name] == 384)
                #expect(saved.tokens[bob.name] == 128)
                gateway = try await GatewayProcess.start(config: Self.config(policy: policy(300), directory: directory), tag: "policy")
                let stillSpent = try await curl(as: alice, gateway.socketPath, "POST", "/v1/chat/completions", body: chat)
                #expect(stillSpent.status == 429, "\(stillSpent.body)")
                #expect(try Self.error(stillSpent).message.contains("(384 today"))

                // A reload with a larger budget applies to the next request.
                let configPath = gateway.directory + "/chatrelayd.yaml"
                try Self.config(policy: policy(1000), directory: directory).replacingOccurrences(of: "SOCKET", with: gateway.socketPath)
                    .write(toFile: configPath, atomically: true, encoding: .utf8)
                let reload = try await runProcess(TestPaths.chatrelayd, ["reload", "--socket", gateway.socketPath])
                #expect(reload.status == 0, "\(reload.standardError)")
                #expect(try await curl(as: alice, gateway.socketPath, "POST", "/v1/chat/completions", body: chat).status == 200)
                #expect(try await gateway.stop() == 0)

                // chatrelayd usage: from the ledger, per caller and per model, as a table and as JSON.
                let usage = try await runProcess(TestPaths.chatrelayd, ["usage", "--config", configPath])
                #expect(usage.status == 0, "\(usage.standardError)")
                print(usage.standardOutput)
                let aliceLine = try #require(usage.standardOutput.split(separator: "\n").first { $0.hasPrefix(alice.name) })
                #expect(aliceLine.split(separator: " ").map(String.init) == [alice.name, "6", "2", "504", "8", "512"], "\(usage.standardOutput)")
                #expect(usage.standardOutput.contains("TOTAL"))
                let json = try await runProcess(TestPaths.chatrelayd, ["usage", "--ledger", directory + "/usage.jsonl", "--by", "model", "--json"])
                #expect(json.status == 0, "\(json.standardError)")
                let report = try JSONValue(parsing: Array(json.standardOutput.utf8))
                #expect(report["by"]?.stringValue == "model")
                #expect(report["rows"]?.arrayValue?.count == 1)
                #expect(report["rows"]?.arrayValue?.first?["model"]?.stringValue == "grok-4-fast")
                #expect(report["total"]?["requests"]?.intValue == 7)
                #expect(report["total"]?["tokens"]?.intValue == 640)
            }
        }
    }
}
