import Foundation
import HTTPTypes
import NIOCore
import RelayCore
import Testing

@testable import RelayGateway

@Suite("Configuration files")
struct ConfigTests {
    static let base = "/etc/chatrelayd"

    static let full = """
        server:
          socket: run/gateway.sock
          socket_mode: "0600"
          max_request_body: 8MiB
          max_event_size: 512KiB
          max_response_body: 1000
          idle_timeout: 15s
        upstreams:
          - name: openai
            kind: openai-compatible
            base_url: https://api.openai.com/v1
            api_key_env: OPENAI_API_KEY
            headers:
              OpenAI-Organization: org-123
            max_connections: 16
            connect_timeout: 500ms
            idle_timeout: 5m
            total_timeout: 1h
          - name: openrouter
            kind: openai-compatible
            base_url: https://openrouter.ai/api/v1
            api_key_file: secrets/openrouter.key
          - name: recorded
            kind: cassette
            cassettes: [cassettes, ../shared/corpus/chat, /var/lib/chatrelayd/seed.yaml]
            pace: 2s
        models:
          - name: gpt-4o-mini
            aliases: [mini, gpt-mini]
            upstream: openai
          - name: fast
            upstream: recorded
            upstream_model: grok-4-fast
            pipeline: bare
          - prefix: openrouter/
            strip_prefix: true
            upstream: openrouter
          - prefix: gpt-
            upstream: openai
        pipeline:
          - passthrough
          - stage: passthrough
        pipelines:
          bare: [passthrough]
        """

    static func parse(_ yaml: String, base: String = Self.base) throws(ConfigError) -> GatewayConfig {
        try ConfigLoader.parse(yaml: yaml, baseDirectory: base)
    }

    /// The message of the error `yaml` is rejected with.
    static func rejection(_ yaml: String) -> String? {
        do {
            _ = try self.parse(yaml)
            return nil
        } catch {
            return error.description
        }
    }

    // MARK: A full file

    @Test("A full valid file reads as written")
    func fullFile() throws {
        let config = try Self.parse(Self.full)

        #expect(config.server.socket == "/etc/chatrelayd/run/gateway.sock")
        #expect(config.server.socketMode.mode == 0o600)
        #expect(config.server.maxRequestBody.bytes == 8 << 20)
        #expect(config.server.maxEventSize.bytes == 512 << 10)
        #expect(config.server.maxResponseBody.bytes == 1000)
        #expect(config.server.idleTimeout.duration == .seconds(15))

        try #require(config.upstreams.count == 3)
        let openai = config.upstreams[0]
        #expect(openai.name == "openai")
        #expect(openai.kind == .openAICompatible)
        #expect(openai.baseURL == "https://api.openai.com/v1")
        #expect(openai.apiKeyEnv == "OPENAI_API_KEY")
        #expect(openai.apiKeyFile == nil)
        #expect(openai.headers == ["OpenAI-Organization": "org-123"])
        #expect(openai.maxConnections == 16)
        #expect(openai.connectTimeout.duration == .milliseconds(500))
        #expect(openai.idleTimeout.duration == .seconds(300))
        #expect(openai.totalTimeout.duration == .seconds(3600))

        let openrouter = config.upstreams[1]
        #expect(openrouter.apiKeyFile == "/etc/chatrelayd/secrets/openrouter.key")
        #expect(openrouter.maxConnections == UpstreamSettings(name: "", kind: .openAICompatible).maxConnections, "defaults apply")
        #expect(openrouter.headers.isEmpty)

        let recorded = config.upstreams[2]
        #expect(recorded.kind == .cassette)
        #expect(recorded.cassettes == ["/etc/chatrelayd/cassettes", "/etc/shared/corpus/chat", "/var/lib/chatrelayd/seed.yaml"])
        #expect(recorded.pace == "2s")

        #expect(
            config.models == [
                ModelSettings(name: "gpt-4o-mini", aliases: ["mini", "gpt-mini"], upstream: "openai"),
                ModelSettings(name: "fast", upstream: "recorded", upstreamModel: "grok-4-fast", pipeline: "bare"),
                ModelSettings(prefix: "openrouter/", upstream: "openrouter", stripPrefix: true),
                ModelSettings(prefix: "gpt-", upstream: "openai"),
            ])
        #expect(config.pipeline == [StageEntry(stage: "passthrough"), StageEntry(stage: "passthrough")])
        #expect(config.pipelines == ["bare": [StageEntry(stage: "passthrough")]])
    }

    @Test("An empty file is the defaults")
    func emptyFile() throws {
        let config = try Self.parse("\n")
        #expect(config.server.socket == "/run/chatrelayd/gateway.sock")
        #expect(config.server.socketMode.mode == 0o660)
        #expect(config.upstreams.isEmpty)
        #expect(config.models.isEmpty)
        #expect(config.pipeline == [StageEntry(stage: "passthrough")])
    }

    @Test("Stage options are every other key of the entry")
    func stageOptions() throws {
        var registry = StageRegistry.builtIn
        registry.register("probe") { options in
            var reader = StageOptions(options, stage: "probe")
            _ = reader.take("interval")
            _ = reader.take("enabled")
            try reader.finish()
            return PassThroughStage()
        }
        let config = try ConfigLoader.parse(
            yaml: "pipeline:\n  - stage: probe\n    interval: 15s\n    enabled: true\n", baseDirectory: Self.base, registry: registry)
        #expect(config.pipeline == [StageEntry(stage: "probe", options: ["interval": "15s", "enabled": true])])
    }

    // MARK: Relative paths

    @Test("Relative paths are resolved against the base directory; absolute ones stay", arguments: [
        ("run/gateway.sock", "/srv/relay/run/gateway.sock"),
        ("./gateway.sock", "/srv/relay/gateway.sock"),
        ("../run/gateway.sock", "/srv/run/gateway.sock"),
        ("/run/chatrelayd/gateway.sock", "/run/chatrelayd/gateway.sock"),
    ])
    func relativePaths(written: String, resolved: String) throws {
        let config = try Self.parse("server:\n  socket: \(written)\n", base: "/srv/relay")
        #expect(config.server.socket == resolved)
    }

    @Test("load(path:) resolves against the file's own folder and names the file in errors")
    func loadFromFile() throws {
        let folder = NSTemporaryDirectory() + "chatrelayd-config-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let good = folder + "/good.yaml"
        try "server:\n  socket: gw.sock\n".write(toFile: good, atomically: true, encoding: .utf8)
        #expect(try ConfigLoader.load(path: good).server.socket == URL(fileURLWithPath: folder + "/gw.sock").standardizedFileURL.path)

        let bad = folder + "/bad.yaml"
        try "sever:\n  socket: gw.sock\n".write(toFile: bad, atomically: true, encoding: .utf8)
        #expect {
            _ = try ConfigLoader.load(path: bad)
        } throws: { error in
            let description = (error as? ConfigError)?.description ?? ""
            return description.hasPrefix(bad) && description.contains("sever")
        }
        #expect(throws: ConfigError.self) { _ = try ConfigLoader.load(path: folder + "/missing.yaml") }
    }

    // MARK: Values

    @Test("Durations", arguments: [
        ("15s", Duration.seconds(15)), ("500ms", .milliseconds(500)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
        ("1.5s", .milliseconds(1500)), ("90", .seconds(90)), ("0", .zero), (" 2s ", .seconds(2)),
    ])
    func durations(text: String, expected: Duration) throws {
        #expect(try ConfigDuration(parsing: text).duration == expected)
    }

    @Test("Things that are not durations", arguments: [
        "", "soon", "15 parsecs", "-1s", "s", "1d", "5mm",
        // Too long for a Duration: refused, not a trap (the config fuzzer's finding).
        "1e300s", "inf", "infs", "nan", "3222222222222222222222222222222222", "1000000000",
    ])
    func badDurations(text: String) {
        #expect(throws: ConfigError.self) { _ = try ConfigDuration(parsing: text) }
    }

    @Test("Sizes", arguments: [
        ("8MiB", 8 << 20), ("512KiB", 512 << 10), ("1GiB", 1 << 30), ("1000", 1000), ("2KB", 2000), ("3MB", 3_000_000), ("10B", 10),
    ])
    func sizes(text: String, bytes: Int) throws {
        #expect(try ConfigByteSize(parsing: text).bytes == bytes)
    }

    @Test("Things that are not sizes", arguments: ["", "big", "8 MiB please", "-1", "1TiB", "1e300MiB", "infKiB", "1e20GiB"])
    func badSizes(text: String) {
        #expect(throws: ConfigError.self) { _ = try ConfigByteSize(parsing: text) }
    }

    /// Fuzz/findings/config-huge-duration.yaml: a YAML number too large for a Duration
    /// trapped in the loader (a reload with such a file would have ended the daemon).
    @Test("A duration written as a number too large is a config error, not a crash")
    func hugeNumberDuration() {
        #expect(throws: (any Error).self) {
            _ = try Self.parse("server:\n  request_timeout: 32222222222222222222222222222222222222222\n")
        }
        #expect(throws: (any Error).self) { _ = try Self.parse("server:\n  request_timeout: .inf\n") }
    }

    @Test("File modes are octal", arguments: [
        ("\"0660\"", UInt16(0o660)), ("\"0600\"", 0o600), ("\"0o640\"", 0o640), ("\"660\"", 0o660), ("660", 0o660),
    ])
    func modes(written: String, mode: UInt16) throws {
        #expect(try Self.parse("server:\n  socket_mode: \(written)\n").server.socketMode.mode == mode)
    }

    @Test("A bare 0660 (which YAML 1.1 reads as the octal number 432) is still mode 0660, or an error")
    func bareOctalMode() {
        // Writing the mode without quotes is an easy mistake; it must not become another mode.
        let result = Result { () throws(ConfigError) in try Self.parse("server:\n  socket_mode: 0660\n").server.socketMode.mode }
        if case .success(let mode) = result {
            #expect(mode == 0o660, "socket_mode: 0660 became \(String(mode, radix: 8))")
        }
    }

    // MARK: Errors that name the place

    @Test("Mistakes are rejected with a message that says where", arguments: [
        ("unknown top-level key", "sever:\n  socket: x\n", ["top level", "sever"]),
        ("unknown server key", "server:\n  sokcet: x\n", ["server", "sokcet"]),
        (
            "unknown key in upstreams[1]",
            """
            upstreams:
              - name: a
                kind: cassette
                cassettes: [x]
              - name: b
                kind: openai-compatible
                base_url: https://example.com/v1
                api_key: sk-secret
            """,
            ["upstreams[1]", "api_key"]
        ),
        ("unknown upstream kind", "upstreams:\n  - name: a\n    kind: grpc\n", ["upstreams[0]", "grpc", "openai-compatible"]),
        (
            "model on an undefined upstream",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - name: m\n    upstream: b\n",
            ["models[0]", "'b'"]
        ),
        (
            "model with both name and prefix",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - name: m\n    prefix: p/\n    upstream: a\n",
            ["models[0]", "name", "prefix"]
        ),
        (
            "model with neither name nor prefix",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - upstream: a\n",
            ["models[0]", "name", "prefix"]
        ),
        (
            "duplicate model name",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - name: m\n    upstream: a\n  - name: m\n    upstream: a\n",
            ["models[1]", "'m'"]
        ),
        (
            "alias that repeats a name",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - name: m\n    upstream: a\n  - name: n\n    aliases: [m]\n    upstream: a\n",
            ["models[1]", "'m'"]
        ),
        (
            "undefined named pipeline",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\nmodels:\n  - name: m\n    upstream: a\n    pipeline: fancy\n",
            ["models[0]", "fancy"]
        ),
        ("unknown stage", "pipeline:\n  - passthrough\n  - moderaton\n", ["pipeline[1]", "moderaton"]),
        ("unknown stage first", "pipeline:\n  - stage: moderaton\n", ["pipeline[0]", "moderaton"]),
        ("unknown stage option", "pipeline:\n  - stage: passthrough\n    bogus: 1\n", ["pipeline[0]", "passthrough", "bogus"]),
        ("unknown stage in a named pipeline", "pipelines:\n  fancy: [nope]\n", ["pipelines.fancy[0]", "nope"]),
        ("bad duration", "server:\n  idle_timeout: 15 parsecs\n", ["idle_timeout", "15 parsecs"]),
        ("negative duration", "server:\n  idle_timeout: -5\n", ["idle_timeout", "negative"]),
        ("bad size", "server:\n  max_event_size: lots\n", ["max_event_size", "lots"]),
        ("bad mode", "server:\n  socket_mode: \"0999\"\n", ["socket_mode", "0999"]),
        ("mode too large", "server:\n  socket_mode: \"01777\"\n", ["socket_mode", "01777"]),
        ("openai-compatible without base_url", "upstreams:\n  - name: a\n    kind: openai-compatible\n", ["upstreams[0]", "'a'", "base_url"]),
        ("base_url that is not http", "upstreams:\n  - name: a\n    kind: openai-compatible\n    base_url: ftp://x/v1\n", ["upstreams[0]", "base_url"]),
        (
            "two key sources",
            "upstreams:\n  - name: a\n    kind: openai-compatible\n    base_url: https://x/v1\n    api_key_env: K\n    api_key_file: f\n",
            ["upstreams[0]", "api_key_env"]
        ),
        ("cassette upstream without cassettes", "upstreams:\n  - name: a\n    kind: cassette\n", ["upstreams[0]", "cassettes"]),
        ("bad pace", "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\n    pace: warp\n", ["upstreams[0]", "warp"]),
        (
            "duplicate upstream name",
            "upstreams:\n  - name: a\n    kind: cassette\n    cassettes: [x]\n  - name: a\n    kind: cassette\n    cassettes: [y]\n",
            ["upstreams[1]", "'a'"]
        ),
        ("upstream without a name", "upstreams:\n  - kind: cassette\n    cassettes: [x]\n", ["upstreams[0]", "name"]),
        ("not YAML", "server: [unclosed\n", ["YAML"]),
    ])
    func mistakes(_ what: String, yaml: String, mentions: [String]) throws {
        let message = try #require(Self.rejection(yaml), "\(what): accepted")
        for fragment in mentions {
            #expect(message.contains(fragment), "\(what): \(message.debugDescription) does not mention \(fragment.debugDescription)")
        }
    }

    // MARK: Built-in default

    @Test("The built-in default serves the fixtures on ./run/gateway.sock without XDG_RUNTIME_DIR")
    func builtInDefault() throws {
        let config = ConfigLoader.builtInDefault(workingDirectory: "/work/main", environment: [:])
        #expect(config.server.socket == "/work/main/run/gateway.sock")
        #expect(config.upstreams.map(\.name) == ["recorded"])
        #expect(config.upstreams.first?.cassettes == ["/work/main/Tests/Fixtures/cassettes"])
        #expect(config.models.compactMap(\.name).contains("grok-4-fast"))
    }

    @Test("The built-in default socket is under XDG_RUNTIME_DIR when that is a writable folder")
    func builtInDefaultXDG() throws {
        let runtime = NSTemporaryDirectory() + "chatrelayd-xdg-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: runtime) }
        let config = ConfigLoader.builtInDefault(workingDirectory: "/work/main", environment: ["XDG_RUNTIME_DIR": runtime])
        #expect(config.server.socket == runtime + "/chatrelayd/gateway.sock")
    }

    @Test("XDG_RUNTIME_DIR that is empty or missing falls back to ./run", arguments: ["", "/nonexistent/chatrelayd-xdg"])
    func builtInDefaultBadXDG(runtime: String) {
        let config = ConfigLoader.builtInDefault(workingDirectory: "/work/main", environment: ["XDG_RUNTIME_DIR": runtime])
        #expect(config.server.socket == "/work/main/run/gateway.sock")
    }
}

extension ConfigTests {
    /// Nested so that `--filter ConfigTests` runs it too.
    @Suite("ModelRouter")
    struct ModelRouterTests {
        static func router(_ models: [ModelSettings]) -> ModelRouter {
            ModelRouter(models: models) { _ in { _, _ in ChatResponse(status: .ok, body: .whole(ByteBuffer())) } }
        }

        static func target(_ router: ModelRouter, _ model: String) -> String? {
            router.route(for: model).map { "\($0.upstreamName):\($0.upstreamModel)" }
        }

        @Test("An exact name beats a prefix listed before it")
        func exactBeatsPrefix() {
            let router = Self.router([ModelSettings(prefix: "gpt-", upstream: "proxy"), ModelSettings(name: "gpt-4o", upstream: "openai")])
            #expect(Self.target(router, "gpt-4o") == "openai:gpt-4o")
            #expect(Self.target(router, "gpt-4o-mini") == "proxy:gpt-4o-mini")
        }

        @Test("Aliases route to the named model; upstream_model renames")
        func aliases() {
            let router = Self.router([
                ModelSettings(name: "grok-4-fast", aliases: ["grok", "fast"], upstream: "xai"),
                ModelSettings(name: "mini", upstream: "openai", upstreamModel: "gpt-4o-mini"),
            ])
            #expect(Self.target(router, "grok-4-fast") == "xai:grok-4-fast")
            #expect(Self.target(router, "grok") == "xai:grok-4-fast")
            #expect(Self.target(router, "fast") == "xai:grok-4-fast")
            #expect(Self.target(router, "mini") == "openai:gpt-4o-mini")
        }

        @Test("strip_prefix drops the prefix; without it the name goes as asked")
        func stripPrefix() {
            let router = Self.router([
                ModelSettings(prefix: "openrouter/", upstream: "openrouter", stripPrefix: true),
                ModelSettings(prefix: "groq/", upstream: "groq"),
            ])
            #expect(Self.target(router, "openrouter/anthropic/claude-sonnet-4") == "openrouter:anthropic/claude-sonnet-4")
            #expect(Self.target(router, "groq/kimi") == "groq:groq/kimi")
            #expect(Self.target(router, "openrouter/") == nil, "stripping everything leaves no model")
        }

        @Test("Prefixes are tried in the order listed")
        func prefixOrder() {
            let router = Self.router([ModelSettings(prefix: "open", upstream: "first"), ModelSettings(prefix: "openai/", upstream: "second")])
            #expect(Self.target(router, "openai/gpt-4o") == "first:openai/gpt-4o")
            let reversed = Self.router([ModelSettings(prefix: "openai/", upstream: "second"), ModelSettings(prefix: "open", upstream: "first")])
            #expect(Self.target(reversed, "openai/gpt-4o") == "second:openai/gpt-4o")
            #expect(Self.target(reversed, "openrouter/x") == "first:openrouter/x")
        }

        @Test("An unknown model has no route")
        func unknown() {
            let router = Self.router([ModelSettings(name: "grok-4-fast", upstream: "xai"), ModelSettings(prefix: "gpt-", upstream: "openai")])
            #expect(router.route(for: "claude") == nil)
            #expect(router.route(for: "") == nil)
            #expect(router.route(for: "GROK-4-FAST") == nil, "names are case-sensitive")
        }

        @Test("listedModels are the names and aliases in config order, not prefixes")
        func listedModels() {
            let router = Self.router([
                ModelSettings(name: "grok-4-fast", aliases: ["grok"], upstream: "xai"),
                ModelSettings(prefix: "openrouter/", upstream: "openrouter", stripPrefix: true),
                ModelSettings(name: "gpt-4o-mini", upstream: "openai"),
            ])
            #expect(router.listedModels.map(\.id) == ["grok-4-fast", "grok", "gpt-4o-mini"])
            #expect(router.listedModels.map(\.upstream) == ["xai", "xai", "openai"])
        }

        @Test("Each entry gets the handler made for it")
        func handlerPerEntry() async throws {
            let router = ModelRouter(models: [ModelSettings(name: "a", upstream: "x"), ModelSettings(prefix: "b/", upstream: "y")]) { settings in
                let tag = settings.name ?? settings.prefix ?? "?"
                return { _, _ in ChatResponse(status: .ok, body: .whole(ByteBuffer(string: tag))) }
            }
            for (model, tag) in [("a", "a"), ("b/c", "b/")] {
                let route = try #require(router.route(for: model))
                let request = try ChatRequest(body: ByteBuffer(string: #"{"model":"\#(model)","messages":[{"role":"user","content":"hi"}]}"#))
                let response = try await route.handler(request, CassetteTests.context())
                guard case .whole(let body) = response.body else {
                    Issue.record("expected a whole body")
                    continue
                }
                #expect(String(buffer: body) == tag)
            }
        }
    }
}
