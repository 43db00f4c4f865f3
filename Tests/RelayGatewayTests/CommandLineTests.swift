import Foundation
import Testing

/// The `chatrelayd` command line: `--version`, `--help`, `check-config`.
@Suite("chatrelayd command line")
struct CommandLineTests {
    @Test("--version prints the version")
    func version() async throws {
        let result = try await runProcess(TestPaths.chatrelayd, ["--version"])
        #expect(result.status == 0)
        #expect(result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test("--help names the subcommands")
    func help() async throws {
        let result = try await runProcess(TestPaths.chatrelayd, ["--help"])
        #expect(result.status == 0)
        #expect(result.standardOutput.contains("serve"))
        #expect(result.standardOutput.contains("check-config"))
    }

    @Test("check-config accepts every configuration in etc/ and prints what it would run", arguments: ["chatrelayd.yaml", "chatrelayd.local.yaml"])
    func checkShippedConfigs(_ name: String) async throws {
        let result = try await runProcess(TestPaths.chatrelayd, ["check-config", TestPaths.repositoryRoot + "/etc/" + name])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains(": OK"))
        #expect(result.standardOutput.contains("pipeline:"))
    }

    @Test("check-config writes nothing: the usage ledger and the state directory it names are not created")
    func checkWritesNothing() async throws {
        let directory = try TestPaths.temporaryDirectory("check-config-quiet")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/chatrelayd.yaml"
        try """
        server:
          socket: \(directory)/gateway.sock
          usage_ledger: \(directory)/ledger/usage.jsonl
          state_directory: \(directory)/state
        upstreams:
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
        models:
          - name: grok-4-fast
            upstream: recorded
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runProcess(TestPaths.chatrelayd, ["check-config", path])
        #expect(result.status == 0, "\(result.standardError)")
        let created = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(created == ["chatrelayd.yaml"], "check-config created \(created)")
    }

    @Test("check-config rejects a bad file with a message that names the entry")
    func checkBadConfig() async throws {
        let directory = try TestPaths.temporaryDirectory("check-config")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/bad.yaml"
        try """
        upstreams:
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
        models:
          - name: grok-4-fast
            upstream: recorded
          - name: other
            upstream: missing
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runProcess(TestPaths.chatrelayd, ["check-config", path])
        #expect(result.status != 0)
        #expect(result.standardError.contains("models[1]"))
        #expect(result.standardError.contains("'missing'"))
    }

    @Test("serve with a bad file exits non-zero and says why")
    func serveBadConfig() async throws {
        let result = try await runProcess(TestPaths.chatrelayd, ["serve", "--config", "/nonexistent/chatrelayd.yaml"])
        #expect(result.status == 78)
        #expect(result.standardError.contains("cannot read"))
    }
}
