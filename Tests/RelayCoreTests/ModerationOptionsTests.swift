import Foundation
@testable import RelayCore
import Testing

/// The `moderation` stage's options as a config gives them.
@Suite("Moderation stage: options", .timeLimit(.minutes(1)))
struct ModerationOptionsTests {
    static let rule: JSONValue = ["name": "codename", "literal": "project nightingale", "action": "redact"]

    func error(_ options: [String: JSONValue], kinds: ModerationHookKinds = .builtIn) -> String? {
        do {
            _ = try ModerationStage(options: options, hookKinds: kinds)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("The registry makes moderation from options; every option is read")
    func fromOptions() throws {
        let stage = try #require(
            try StageRegistry.builtIn.makeStage(
                named: "moderation",
                options: [
                    "hold_back": 40, "mask": "***", "log_text": true,
                    "input": ["roles": ["user", "tool"]],
                    "output": ["content": true, "reasoning": true, "tool_arguments": true],
                    "hooks": [["kind": "patterns", "name": "local", "rules": [Self.rule, ["name": "card", "regex": #"\d{16}"#, "check": ["output"]]]]],
                ]
            ) as? ModerationStage
        )
        #expect(stage.holdBack == 40)
        #expect(stage.inputRoles == ["user", "tool"])
        #expect(stage.outputFields == ModerationOutputFields(content: true, reasoning: true, toolArguments: true))
        #expect(stage.input.scanner.rules.map(\.name) == ["codename"])
        #expect(stage.output.scanner.rules.map(\.name) == ["codename", "card"])
        #expect(stage.output.scanner.rules.allSatisfy { $0.hookName == "local" })
        #expect(stage.output.mask == "***")
        #expect(stage.output.logText)
    }

    @Test("Mistakes are errors that say where and what")
    func mistakes() {
        let hooks: JSONValue = [["kind": "patterns", "rules": [Self.rule]]]
        #expect(self.error(["hooks": hooks, "holdback": 10])?.contains("unknown option(s) holdback") == true)
        #expect(self.error([:])?.contains("option 'hooks'") == true)
        #expect(self.error(["hooks": hooks, "hold_back": 5])?.contains("rule 'codename' is 19 characters long, more than hold_back (5)") == true)
        #expect(self.error(["hooks": [["kind": "command", "command": ["/bin/cat"]]]])?.contains("unknown kind 'command' (known: patterns)") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [["name": "x", "regex": "(unclosed"]]]]])?.contains("not a valid regular expression") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [["name": "x", "regex": "a*"]]]]])?.contains("matches empty text") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [["name": "x", "literal": "a", "regex": "b"]]]]])?.contains("exactly one of 'literal' and 'regex'") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [["name": "x", "literal": "a", "action": "flag", "replacement": "b"]]]]])?.contains("only goes with action redact") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [["literal": "a"]]]]])?.contains("'name' is required") == true)
        #expect(self.error(["hooks": [["kind": "patterns"]]])?.contains("give 'rules', 'file' or both") == true)
        #expect(self.error(["hooks": [["kind": "patterns", "rules": [Self.rule]], ["kind": "patterns", "rules": [Self.rule]]]])?.contains("used twice") == true)
        #expect(self.error(["hooks": hooks, "output": ["contents": true]])?.contains("unknown option(s) contents") == true)
    }

    @Test("External hook kinds get the common options read for them, and must take their own")
    func externalKinds() throws {
        let kinds = ModerationHookKinds.builtIn.adding("stand-in") { options, settings in
            _ = options.take("endpoint")
            #expect(settings.name == "judge")
            #expect(settings.timeout == .milliseconds(250))
            #expect(settings.failClosed == false)
            #expect(settings.checksInput == false)
            #expect(settings.flaggedAction == .flag)
            return ScriptedModerationHook { _ in .answer(.pass) }
        }
        let entry: JSONValue = [
            "kind": "stand-in", "name": "judge", "timeout": "250ms", "on_failure": "open", "check": ["output"], "flagged_action": "flag",
            "endpoint": "x",
        ]
        let stage = try ModerationStage(options: ["hooks": [entry]], hookKinds: kinds)
        #expect(stage.input.hooks.isEmpty)
        #expect(stage.output.hooks.map(\.settings.name) == ["judge"])
        var extra = entry.objectValue!
        extra["colour"] = "blue"
        #expect(self.error(["hooks": [.object(extra)]], kinds: kinds)?.contains("unknown option(s) colour") == true)
        extra["colour"] = nil
        extra["on_failure"] = "maybe"
        #expect(self.error(["hooks": [.object(extra)]], kinds: kinds)?.contains("open, closed") == true)
    }

    @Test("Rules may come from a file, which is read again every time the stage is built (on reload)")
    func rulesFile() throws {
        let path = NSTemporaryDirectory() + "moderation-rules-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try #"[{"name":"one","literal":"alpha"}]"#.write(toFile: path, atomically: true, encoding: .utf8)
        let options: [String: JSONValue] = ["hooks": [["kind": "patterns", "file": .string(path)]]]
        #expect(try ModerationStage(options: options).output.scanner.rules.map(\.name) == ["one"])
        try #"{"rules":[{"name":"one","literal":"alpha"},{"name":"two","regex":"beta+"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try ModerationStage(options: options).output.scanner.rules.map(\.name) == ["one", "two"])
        try #"{"rules":[{"name":"broken"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(self.error(options)?.contains("\(path): rules[0] 'broken'") == true)
        try FileManager.default.removeItem(atPath: path)
        #expect(self.error(options)?.contains("cannot read \(path)") == true)
    }
}
