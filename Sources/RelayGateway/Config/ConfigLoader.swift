import Foundation
public import RelayCore
import Yams

/// Reads, checks and explains configuration files.
public enum ConfigLoader {
    /// Loads and validates the file at `path`; relative paths inside it become relative to its folder.
    public static func load(path: String, registry: StageRegistry = .gateway) throws(ConfigError) -> GatewayConfig {
        let url = URL(fileURLWithPath: path)
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw ConfigError("\(path): cannot read the file (\(error.localizedDescription))")
        }
        do {
            return try self.parse(yaml: text, baseDirectory: url.deletingLastPathComponent().path, registry: registry)
        } catch {
            throw ConfigError("\(path): \(error.description)")
        }
    }

    /// The configuration `chatrelayd serve` runs without `--config`: the project's own
    /// recorded streams, served on a socket the user owns, with no API key.
    public static func builtInDefault(
        workingDirectory: String = FileManager.default.currentDirectoryPath,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> GatewayConfig {
        var config = try! self.parse(yaml: builtInDefaultYAML, baseDirectory: workingDirectory, registry: .builtIn)
        config.server.socket = self.defaultUserSocketPath(workingDirectory: workingDirectory, environment: environment)
        return config
    }

    /// `$XDG_RUNTIME_DIR/chatrelayd/gateway.sock` when there is one, else `./run/gateway.sock`.
    public static func defaultUserSocketPath(workingDirectory: String, environment: [String: String]) -> String {
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty, FileManager.default.isWritableFile(atPath: runtime) {
            return runtime + "/chatrelayd/gateway.sock"
        }
        return workingDirectory + "/run/gateway.sock"
    }

    /// The built-in default, as YAML (see `etc/chatrelayd.local.yaml`, which says the same).
    public static let builtInDefaultYAML = """
        server:
          socket: run/gateway.sock
          socket_mode: "0660"
        upstreams:
          - name: recorded
            kind: cassette
            cassettes: [Tests/Fixtures/cassettes]
            pace: none
        models:
          - name: grok-4-fast
            upstream: recorded
          - name: gpt-4o-mini
            upstream: recorded
        pipeline:
          - stage: keepalive
            interval: 15s
          - stage: usage
        """

    /// Parses and validates YAML text.
    public static func parse(yaml: String, baseDirectory: String, registry: StageRegistry = .gateway) throws(ConfigError) -> GatewayConfig {
        var config: GatewayConfig
        do {
            if yaml.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                config = GatewayConfig()
            } else {
                config = try YAMLDecoder().decode(GatewayConfig.self, from: yaml)
            }
        } catch let error as ConfigError {
            throw error
        } catch let error as DecodingError {
            throw ConfigError(self.describe(error))
        } catch {
            throw ConfigError("not valid YAML: \(error)")
        }
        config.resolvePaths(relativeTo: baseDirectory)
        try self.validate(config, registry: registry)
        return config
    }

    /// Checks what the types alone cannot: names that refer to each other, stages that exist.
    public static func validate(_ config: GatewayConfig, registry: StageRegistry) throws(ConfigError) {
        var upstreamNames = Set<String>()
        for (index, upstream) in config.upstreams.enumerated() {
            let place = "upstreams[\(index)] '\(upstream.name)'"
            guard !upstream.name.isEmpty else { throw ConfigError("upstreams[\(index)]: 'name' is empty") }
            guard upstreamNames.insert(upstream.name).inserted else { throw ConfigError("\(place): the name is used twice") }
            switch upstream.kind {
            case .openAICompatible:
                guard let base = upstream.baseURL, let url = URL(string: base), url.scheme == "http" || url.scheme == "https", url.host != nil
                else { throw ConfigError("\(place): 'base_url' must be an http(s) URL such as https://api.openai.com/v1") }
                let keySources = [upstream.apiKeyEnv, upstream.apiKeyFile, upstream.apiKeyCredential].compactMap { $0 }
                guard keySources.count <= 1 else {
                    throw ConfigError("\(place): give at most one of api_key_env, api_key_file, api_key_credential")
                }
                guard upstream.maxConnections > 0 else { throw ConfigError("\(place): 'max_connections' must be positive") }
            case .cassette:
                guard !upstream.cassettes.isEmpty else { throw ConfigError("\(place): 'cassettes' lists no file or folder") }
                do {
                    _ = try CassettePacing(upstream.pace)
                } catch {
                    throw ConfigError("\(place): \(error.description)")
                }
            }
        }
        var modelNames = Set<String>()
        for (index, model) in config.models.enumerated() {
            let place = "models[\(index)]"
            guard (model.name == nil) != (model.prefix == nil) else {
                throw ConfigError("\(place): give exactly one of 'name' and 'prefix'")
            }
            guard upstreamNames.contains(model.upstream) else {
                throw ConfigError("\(place): upstream '\(model.upstream)' is not defined under 'upstreams'")
            }
            for name in [model.name].compactMap({ $0 }) + model.aliases {
                guard !name.isEmpty else { throw ConfigError("\(place): a model name is empty") }
                guard modelNames.insert(name).inserted else { throw ConfigError("\(place): model name '\(name)' is used twice") }
            }
            for (index, fallback) in model.fallbacks.enumerated() where !upstreamNames.contains(fallback.upstream) {
                throw ConfigError("\(place).fallbacks[\(index)]: upstream '\(fallback.upstream)' is not defined under 'upstreams'")
            }
            if let pipeline = model.pipeline, config.pipelines[pipeline] == nil {
                throw ConfigError("\(place): pipeline '\(pipeline)' is not defined under 'pipelines'")
            }
        }
        let named = config.pipelines.sorted { $0.key < $1.key }.map { ("pipelines.\($0.key)", $0.value) }
        for (where_, entries) in [("pipeline", config.pipeline)] + named {
            for (index, entry) in entries.enumerated() {
                do {
                    _ = try registry.makeStage(named: entry.stage, options: entry.options)
                } catch let error as StageConfigurationError {
                    throw ConfigError("\(where_)[\(index)] (\(entry.stage)): \(error.description)")
                } catch {
                    throw ConfigError("\(where_)[\(index)] (\(entry.stage)): \(error)")
                }
            }
        }
        try self.validatePolicy(config)
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            let text = codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.hasPrefix(".") ? String(text.dropFirst()) : (text.isEmpty ? "top level" : text)
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context.codingPath)
            return "\(parent == "top level" ? "" : parent + ": ")missing required key '\(key.stringValue)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            if let underlying = context.underlyingError as? ConfigError { return "\(path(context.codingPath)): \(underlying)" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        case .dataCorrupted(let context):
            if let underlying = context.underlyingError as? ConfigError { return "\(path(context.codingPath)): \(underlying)" }
            if let underlying = context.underlyingError { return "\(path(context.codingPath)): \(context.debugDescription) \(underlying)" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

extension GatewayConfig {
    mutating func resolvePaths(relativeTo base: String) {
        func resolve(_ path: String) -> String {
            if path.hasPrefix("/") { return path }
            return URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: base, isDirectory: true)).standardizedFileURL.path
        }
        self.server.socket = resolve(self.server.socket)
        self.server.usageLedger = self.server.usageLedger.map(resolve)
        self.server.stateDirectory = self.server.stateDirectory.map(resolve)
        for index in self.upstreams.indices {
            self.upstreams[index].cassettes = self.upstreams[index].cassettes.map(resolve)
            self.upstreams[index].apiKeyFile = self.upstreams[index].apiKeyFile.map(resolve)
        }
        self.pipeline = self.pipeline.map { $0.resolvingPaths(resolve) }
        self.pipelines = self.pipelines.mapValues { $0.map { $0.resolvingPaths(resolve) } }
    }
}
