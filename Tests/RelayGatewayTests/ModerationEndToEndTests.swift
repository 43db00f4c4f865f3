import Foundation
#if canImport(Glibc)
import Glibc
#endif
import RelayCore
@testable import RelayGateway
import Testing

/// The moderation stage in the real daemon, called with curl: the forbidden phrase split
/// across two, three and one-character chunks for each action (what the client's bytes
/// hold), requests blocked before the upstream is called, whole answers, the `command`
/// and `http` hooks, the usage ledger and journal, and a rules file that reload picks up.
@Suite("Moderation through the daemon", .timeLimit(.minutes(2)))
struct ModerationEndToEndTests {
    struct Setup {
        let gateway: GatewayProcess
        let upstream: ModerationTestServer
        let service: ModerationTestServer
        let ledger: String
        let rulesFile: String

        var configPath: String { self.gateway.directory + "/chatrelayd.yaml" }

        func chat(_ model: String, stream: Bool = true, content: String = "Tell me the code name.") async throws -> CurlResponse {
            let body: JSONValue = ["model": .string(model), "stream": .bool(stream), "messages": [["role": "user", "content": .string(content)]]]
            return try await curl(self.gateway.socketPath, "POST", "/v1/chat/completions", body: body.serialized())
        }

        /// The ledger's records, oldest first.
        func records() throws -> [JSONValue] {
            try String(contentsOfFile: self.ledger, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
        }

        func record(for model: String) throws -> JSONValue? { try self.records().last { $0["model"]?.stringValue == model } }
    }

    static func config(upstreamPort: String, serviceAddress: String, ledger: String, rulesFile: String) -> String {
        """
        server:
          socket: SOCKET
          usage_ledger: \(ledger)
        upstreams:
          - name: scripted
            kind: openai-compatible
            base_url: \(upstreamPort)/v1
        models:
          - {prefix: "block-", upstream: scripted, pipeline: block}
          - {prefix: "redact-", upstream: scripted, pipeline: redact}
          - {prefix: "flag-", upstream: scripted, pipeline: flag}
          - {prefix: "hooked-", upstream: scripted, pipeline: hooked}
          - {prefix: "plain-", upstream: scripted}
        pipelines:
          block:
            - stage: moderation
              hold_back: 64
              hooks:
                - kind: patterns
                  file: \(rulesFile)
          redact:
            - stage: moderation
              hooks:
                - kind: patterns
                  rules: [{name: codename, literal: project nightingale, action: redact}]
          flag:
            - stage: moderation
              hooks:
                - kind: patterns
                  rules: [{name: codename, literal: project nightingale, action: flag}]
          hooked:
            - stage: moderation
              hooks:
                - kind: command
                  name: py
                  command: [/usr/bin/python3, \(ModerationCommandHookTests.script)]
                  timeout: 2s
                  on_failure: closed
                - kind: http
                  name: svc
                  url: \(serviceAddress)/v1/moderations
                  timeout: 2s
                  on_failure: open
                  check: [output]
        """
    }

    static let blockRules = """
        rules:
          - {name: codename, literal: project nightingale, action: block}
        """

    static func withSetup(_ body: (Setup) async throws -> Void) async throws {
        let upstream = try await ScriptedChatUpstream.start()
        let service = try await ModerationService.start()
        let directory = try TestPaths.temporaryDirectory("moderation")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let rulesFile = directory + "/moderation-rules.yaml"
        try Self.blockRules.write(toFile: rulesFile, atomically: true, encoding: .utf8)
        // Named relative to the config's folder (a sibling of this one), as an operator would.
        let relative = "../" + (directory as NSString).lastPathComponent + "/moderation-rules.yaml"
        let config = Self.config(upstreamPort: upstream.address, serviceAddress: service.address, ledger: ledger, rulesFile: relative)
        let gateway = try await GatewayProcess.start(config: config, tag: "moderation-e2e")
        let setup = Setup(gateway: gateway, upstream: upstream, service: service, ledger: ledger, rulesFile: rulesFile)
        do {
            try await body(setup)
        } catch {
            Issue.record("daemon log:\n\(gateway.log)")
            throw error
        }
        #expect(try await gateway.stop() == 0)
        await upstream.stop()
        await service.stop()
    }

    static func content(of response: CurlResponse) -> String {
        response.dataEvents.compactMap { try? JSONValue(parsing: Array($0.utf8)) }
            .compactMap { $0["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue }.joined()
    }

    @Test("The phrase split across two, three and one-character chunks: block, redact and flag, as the client's bytes show")
    func splitPhrase() async throws {
        try await Self.withSetup { setup in
            for split in ["two", "three", "one"] {
                let blocked = try await setup.chat("block-\(split)")
                #expect(blocked.status == 200)
                #expect(!blocked.body.lowercased().contains("nightingale"), "\(split): \(blocked.body)")
                #expect(!blocked.body.contains("project night"))
                #expect(Self.content(of: blocked) == "The code name is ")
                #expect(blocked.dataEvents.suffix(2).first?.contains(#""finish_reason":"content_filter""#) == true)
                #expect(blocked.dataEvents.last == "[DONE]")
                #expect(!blocked.body.contains("tick"), "nothing after the phrase")
                let ended = await setup.upstream.waitForAny(["cancelled:block-\(split)", "finished:block-\(split)"])
                #expect(ended == "cancelled:block-\(split)", "the upstream request was cancelled")

                let redacted = try await setup.chat("redact-\(split)")
                #expect(redacted.status == 200)
                #expect(!redacted.body.lowercased().contains("nightingale"), "\(split): \(redacted.body)")
                #expect(Self.content(of: redacted) == "The code name is [redacted], keep it secret.")
                #expect(redacted.dataEvents.last == "[DONE]")

                let flagged = try await setup.chat("flag-\(split)")
                #expect(Self.content(of: flagged) == ScriptedChatUpstream.text, "flag lets the text through")
                #expect(flagged.dataEvents.last == "[DONE]")
            }
            for (model, action) in [("block-two", "block"), ("redact-three", "redact"), ("flag-one", "flag")] {
                let record = try #require(try setup.record(for: model))
                #expect(record["moderation"] == [["rule": "codename", "action": .string(action), "where": "output.content", "hook": "patterns"]])
                #expect(record["finish_reason"]?.stringValue == (action == "block" ? "content_filter" : "stop"))
            }
            let ledger = try String(contentsOfFile: setup.ledger, encoding: .utf8)
            #expect(!ledger.lowercased().contains("nightingale"), "no offending text in the ledger")
            #expect(setup.gateway.log.contains("moderation: block codename in output.content (patterns)"))
            #expect(!setup.gateway.log.lowercased().contains("nightingale"), "nor in the journal")
        }
    }

    @Test("A request with the phrase: 400 content_policy_violation naming the rule, the upstream never called; redact rewrites what it gets")
    func input() async throws {
        try await Self.withSetup { setup in
            let blocked = try await setup.chat("block-input", content: "What is Project Nightingale?")
            #expect(blocked.status == 400)
            let error = try JSONValue(parsing: Array(blocked.body.utf8))["error"]
            #expect(error?["code"]?.stringValue == "content_policy_violation")
            #expect(error?["message"]?.stringValue?.contains("rule 'codename'") == true)
            #expect(!setup.upstream.events.contains("request:block-input"), "the upstream was never called")
            #expect(try setup.record(for: "block-input")?["moderation"]?.arrayValue?.first?["where"] == "input.messages[0]")

            let redacted = try await setup.chat("redact-input", stream: false, content: "What is Project Nightingale?")
            #expect(redacted.status == 200)
            let sent = try #require(setup.upstream.body(of: "request:redact-input"))
            #expect(sent["messages"]?.arrayValue?.first?["content"] == "What is [redacted]?")
        }
    }

    @Test("Non-streaming answers are checked whole")
    func wholeAnswers() async throws {
        try await Self.withSetup { setup in
            let blocked = try await setup.chat("block-whole", stream: false)
            #expect(blocked.status == 200)
            let choice = try JSONValue(parsing: Array(blocked.body.utf8))["choices"]?.arrayValue?.first
            #expect(choice?["finish_reason"] == "content_filter")
            #expect(choice?["message"]?["content"] == .null)
            let redacted = try await setup.chat("redact-whole", stream: false)
            #expect(try JSONValue(parsing: Array(redacted.body.utf8))["choices"]?.arrayValue?.first?["message"]?["content"] == "The code name is [redacted], keep it secret.")
        }
    }

    @Test("The command and http hooks in the daemon: windows, block, redact; the service sees sentences, not chunks")
    func externalHooks() async throws {
        try await Self.withSetup { setup in
            let blocked = try await setup.chat("hooked-hooked")
            #expect(blocked.status == 200)
            #expect(Self.content(of: blocked) == "Hello there. ")
            #expect(!blocked.body.contains("forbid"))
            #expect(blocked.dataEvents.suffix(2).first?.contains(#""finish_reason":"content_filter""#) == true)
            #expect(await setup.service.waitFor("moderate:output.content:Hello there. "))
            #expect(await setup.service.waitFor("moderate:output.content:This is forbidden stuff. "))

            let polite = try await setup.chat("hooked-polite")
            #expect(Self.content(of: polite) == "Hello there. Do not be [polite]. Bye.")
            let record = try #require(try setup.record(for: "hooked-polite"))
            // Both hooks redacted the window; the command hook's replacement (listed first) won.
            #expect(record["moderation"] == [
                ["rule": "manners", "action": "redact", "where": "output.content", "hook": "py"],
                ["rule": "svc", "action": "redact", "where": "output.content", "hook": "svc"],
            ])

            // The user's message went to the command hook (input) but not to the service (output only).
            let input = try await setup.chat("hooked-clean", content: "a forbidden question")
            #expect(input.status == 400)
            #expect(!setup.service.events.contains { $0.contains("a forbidden question") })
        }
    }

    @Test("The added delay of the patterns hook through the daemon, one character every 20 ms: within the hold-back")
    func addedDelay() async throws {
        try await Self.withSetup { setup in
            let baseline = try await Self.arrivals(setup, model: "plain-paced")
            let moderated = try await Self.arrivals(setup, model: "block-paced")
            let text = Array(ScriptedChatUpstream.pacedText.unicodeScalars)
            try #require(baseline.count == text.count && moderated.count == text.count, "\(baseline.count) \(moderated.count)")
            let sentBaseline = setup.upstream.marks("plain-paced")
            let sentModerated = setup.upstream.marks("block-paced")
            func delays(_ arrived: [ContinuousClock.Instant], _ sent: [ContinuousClock.Instant]) -> [Duration] {
                zip(arrived, sent).map { $0 - $1 }
            }
            let plain = delays(baseline, sentBaseline)
            let held = delays(moderated, sentModerated)
            let added = zip(held, plain).map { $0 - $1 }
            let worst = held.max()!
            let holdBackTime = ScriptedChatUpstream.pace * 64
            let median = held.sorted()[held.count / 2]
            print("patterns hook through the daemon: worst delay \(worst) (without moderation \(plain.max()!)), median \(median), "
                  + "worst added \(added.max()!); hold_back 64 characters = \(holdBackTime) at this pace")
            // A measurement, printed above; the bound on the hold-back is asserted exactly, in
            // chunks rather than time, by ModerationDelayTests. Here only what load cannot
            // change: "project nightingal" (18 characters) waits for the upstream's next ones.
            #expect(worst >= ScriptedChatUpstream.pace * 15)
        }
    }

    /// Streams `model` over a raw socket and notes when each content character arrived.
    static func arrivals(_ setup: Setup, model: String) async throws -> [ContinuousClock.Instant] {
        let body = (["model": .string(model), "stream": true, "messages": [["role": "user", "content": "hi"]]] as JSONValue).serialized()
        let socketPath = setup.gateway.socketPath
        return try await onOwnThread { try TimedStreamReader.read(socketPath: socketPath, request: RawUnixClient.post("/v1/chat/completions", json: body)) }
    }

    @Test("Reload reads the rules file again; a broken one is refused and the old rules stay")
    func reloadRulesFile() async throws {
        try await Self.withSetup { setup in
            #expect(Self.content(of: try await setup.chat("block-clean")) == "Nothing to see here.")
            try (Self.blockRules + "\n  - {name: seeing, regex: 'to\\s+see', action: redact, replacement: '...'}\n")
                .write(toFile: setup.rulesFile, atomically: true, encoding: .utf8)
            let reload = try await runProcess(TestPaths.chatrelayd, ["reload", "--config", setup.configPath])
            #expect(reload.status == 0, "\(reload.standardError)")
            #expect(Self.content(of: try await setup.chat("block-clean")) == "Nothing ... here.")

            try "rules:\n  - {name: broken}\n".write(toFile: setup.rulesFile, atomically: true, encoding: .utf8)
            let bad = try await runProcess(TestPaths.chatrelayd, ["reload", "--config", setup.configPath])
            #expect(bad.status != 0)
            #expect(bad.standardError.contains("rules[0] 'broken'"), "\(bad.standardError)")
            #expect(Self.content(of: try await setup.chat("block-clean")) == "Nothing ... here.", "the previous rules still apply")
        }
    }
}

/// Reads an event stream from the gateway and notes when each content character arrived.
enum TimedStreamReader {
    static func read(socketPath: String, request: String) throws -> [ContinuousClock.Instant] {
        let fd = try RawUnixClient.connect(socketPath)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw GatewayProcessError("short write") }
        var pending = ""
        var arrivals: [ContinuousClock.Instant] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = ContinuousClock.now + .seconds(60)
        var done = false
        while ContinuousClock.now < deadline, !done {
            let count = Glibc.read(fd, &buffer, buffer.count)
            guard count > 0 else { break }
            let now = ContinuousClock.now
            pending += String(decoding: buffer[..<count], as: UTF8.self)
            // Every complete `data:` line that arrived in this read.
            while let end = pending.range(of: "\n\n") {
                let block = String(pending[..<end.lowerBound])
                pending = String(pending[end.upperBound...])
                if block.contains("data: [DONE]") { done = true }  // the connection stays open (keep-alive)
                guard let start = block.range(of: "data: {") else { continue }
                let json = String(block[block.index(start.lowerBound, offsetBy: 6)...])
                guard let document = try? JSONValue(parsing: Array(json.utf8)) else { continue }
                let text = document["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue ?? ""
                arrivals += Array(repeating: now, count: text.unicodeScalars.count)
            }
            if pending.contains("[DONE]") { break }
        }
        return arrivals
    }
}
