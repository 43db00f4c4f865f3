import Foundation
public import RelayCore
import Yams

extension StageRegistry {
    /// The stages the daemon runs: the built-in ones, with a `moderation` stage that can also
    /// run `command` and `http` hooks and reads its rules files as YAML.
    ///
    /// RelayCore's ``StageRegistry/builtIn`` cannot start processes or open sockets, so its
    /// `moderation` knows only `patterns`; this registry replaces that one entry.
    public static let gateway: StageRegistry = {
        var registry = StageRegistry.builtIn
        registry.register("moderation") { options in try ModerationStage(options: options, hookKinds: .gateway) }
        return registry
    }()
}

extension ModerationHookKinds {
    /// `patterns`, `command` and `http`, with YAML (or JSON) rules files.
    public static let gateway = ModerationHookKinds(readRulesFile: { path in
        try YAMLDecoder().decode(JSONValue.self, from: try String(contentsOfFile: path, encoding: .utf8))
    })
    .adding("command", CommandModerationHook.make)
    .adding("http", HTTPModerationHook.make)
}
