import Foundation
import HTTPTypes
import Logging
import NIOCore
import RelayCore
@testable import RelayGateway
import Testing

/// The `http` hook against a real HTTP service on loopback TCP and on a Unix socket: both
/// answer shapes, and a service that times out or fails under fail-open and fail-closed.
@Suite("Moderation: the http hook", .timeLimit(.minutes(1)))
struct ModerationHTTPHookTests {
    static func hook(_ options: [String: JSONValue], timeout: Duration = .seconds(5), flagged: ModerationAction = .block) throws -> any ModerationHook {
        var reader = StageOptions(options, stage: "moderation hooks[0] (http)")
        let hook = try HTTPModerationHook.make(options: &reader, settings: ExternalHookSettings(name: "svc", timeout: timeout, flaggedAction: flagged))
        try reader.finish()
        return hook
    }

    static func input(_ text: String) -> ModerationHookInput {
        ModerationHookInput(text: text, location: "output.content", requestID: "req_9", model: "m")
    }

    static func stage(_ hook: any ModerationHook, timeout: Duration = .seconds(5), failClosed: Bool) -> ModerationStage {
        ModerationStage(hooks: [(ExternalHookSettings(name: "svc", timeout: timeout, failClosed: failClosed, checksInput: false), hook)])
    }

    @Test("Over TCP: OpenAI's shape and the simple shape; the body is what /v1/moderations takes")
    func overTCP() async throws {
        let service = try await ModerationService.start()
        defer { Task { await service.stop() } }
        let hook = try Self.hook(["url": .string(service.address + "/v1/moderations"), "model": "omni-moderation-latest", "headers": ["X-Team": "a"]])
        #expect(try await hook.check(Self.input("all fine")) == .pass)
        #expect(try await hook.check(Self.input("something violent")) == ModerationHookAnswer(action: .block, rule: "violence"))
        #expect(try await hook.check(Self.input("a forbidden thing")) == ModerationHookAnswer(action: .block, rule: "service-forbidden"))
        #expect(try await hook.check(Self.input("a rude thing")) == ModerationHookAnswer(action: .redact, replacement: "a [polite] thing"))
        #expect(service.body(of: "moderate:output.content:all fine") == ["input": "all fine", "model": "omni-moderation-latest"])
        let flagging = try Self.hook(["url": .string(service.address + "/v1/moderations")], flagged: .flag)
        #expect(try await flagging.check(Self.input("something violent")).action == .flag)
    }

    @Test("Over a Unix socket")
    func overUnixSocket() async throws {
        let directory = try TestPaths.temporaryDirectory("mod-http")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let service = try await ModerationService.start(unixSocket: directory + "/moderation.sock")
        defer { Task { await service.stop() } }
        let hook = try Self.hook(["url": "http://localhost/v1/moderations", "socket_path": .string(directory + "/moderation.sock")])
        #expect(try await hook.check(Self.input("a forbidden thing")).action == .block)
        #expect(try await hook.check(Self.input("fine")) == .pass)
        #expect(await service.waitFor("moderate:output.content:fine"))
    }

    @Test("A service that times out: fail-open passes after the timeout, the call cancelled; fail-closed blocks")
    func timeout() async throws {
        let service = try await ModerationService.start()
        defer { Task { await service.stop() } }
        let hook = try Self.hook(["url": .string(service.address + "/v1/moderations")])
        #expect(try await hook.check(Self.input("warm up")) == .pass, "connected before the timed part")
        let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "u", stream: true, caller: nil))
        let open = try await ModerationCommandHookTests.stream(Self.stage(hook, timeout: .seconds(2), failClosed: false), ["A slow one. ", "Done."], record: record)
        // The service answers a slow one after 60 s: the stream ended because the stage gave up.
        #expect(open.content == "A slow one. Done.")
        // The slow text timed out; on a loaded machine the check of "Done." may time out too.
        let failures = record.snapshot.moderation.map(\.failure)
        #expect(failures.first == "timeout" && failures.allSatisfy { $0 == "timeout" }, "\(failures)")
        #expect(await service.waitFor("moderate:output.content:A slow one. "))
        let closed = try await ModerationCommandHookTests.stream(Self.stage(hook, timeout: .seconds(2), failClosed: true), ["Fine. ", "A slow one. ", "Done."])
        #expect(closed.content == "Fine. ")
        #expect(closed.finish == ["content_filter"])
    }

    @Test("A service that drops the connection, answers 500, or is not there: fail-open passes, fail-closed blocks")
    func failures() async throws {
        let service = try await ModerationService.start()
        defer { Task { await service.stop() } }
        let hook = try Self.hook(["url": .string(service.address + "/v1/moderations")])
        // A timeout far beyond what a dropped connection or a 500 takes: with the default
        // 5 s, a CI run under the parallel suite's load saw the drop reported as "timeout".
        let patient = Duration.seconds(30)
        for text in ["Then a crash. ", "Then broken. "] {
            let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "u", stream: true, caller: nil))
            let open = try await ModerationCommandHookTests.stream(Self.stage(hook, timeout: patient, failClosed: false), ["One. ", text, "Two."], record: record)
            #expect(open.content == "One. \(text)Two.")
            #expect(record.snapshot.moderation.map(\.failure) == ["unreachable"])
            let closed = try await ModerationCommandHookTests.stream(Self.stage(hook, timeout: patient, failClosed: true), ["One. ", text, "Two."])
            #expect(closed.content == "One. ")
            #expect(closed.finish == ["content_filter"])
        }
        // Nothing listens on this port any more.
        await service.stop()
        let gone = try await ModerationCommandHookTests.stream(Self.stage(hook, timeout: patient, failClosed: true), ["Anyone there?"])
        #expect(gone.finish == ["content_filter"])
    }

    @Test("Options are checked when the config is read")
    func options() {
        #expect(throws: StageConfigurationError.self) { try Self.hook([:]) }
        #expect(throws: StageConfigurationError.self) { try Self.hook(["url": "ftp://example.com/x"]) }
        #expect(throws: StageConfigurationError.self) { try Self.hook(["url": "http://localhost/x", "headers": ["X": 1]]) }
        #expect(throws: StageConfigurationError.self) { try Self.hook(["url": "http://localhost/x", "api_key_env": "CHATRELAYD_TEST_SURELY_UNSET"]) }
        #expect(throws: StageConfigurationError.self) { try Self.hook(["url": "http://localhost/x", "colour": "blue"]) }
    }
}
