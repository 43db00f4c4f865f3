import Foundation
import HTTPTypes
import Logging
import NIOCore
import RelayCore
@testable import RelayGateway
import Testing

/// The `command` hook with a real child process (Tests/clients/moderation_hook.py): its
/// verdicts, a hook that times out and one that crashes under fail-open and fail-closed,
/// restarts, and late answers that must not be taken for the next request's.
@Suite("Moderation: the command hook", .timeLimit(.minutes(1)))
struct ModerationCommandHookTests {
    static var script: String { TestPaths.repositoryRoot + "/Tests/clients/moderation_hook.py" }

    static func hook(_ extra: [String] = []) -> CommandModerationHook {
        CommandModerationHook(name: "py", arguments: ["/usr/bin/python3", Self.script] + extra, logger: Logger(label: "test"))
    }

    static func input(_ text: String, where location: String = "output.content") -> ModerationHookInput {
        ModerationHookInput(text: text, location: location, requestID: "req_1", model: "m")
    }

    /// A stage with the hook on output only.
    static func stage(_ hook: CommandModerationHook, timeout: Duration = .seconds(5), failClosed: Bool) -> ModerationStage {
        ModerationStage(hooks: [(ExternalHookSettings(name: "py", timeout: timeout, failClosed: failClosed, checksInput: false), hook)])
    }

    /// Streams `pieces` through `stage`; returns the client's content and finish reasons.
    static func stream(_ stage: ModerationStage, _ pieces: [String], record: RequestRecord? = nil) async throws -> (content: String, finish: [String]) {
        let envelope = #""id":"c1","object":"chat.completion.chunk","created":1,"model":"m""#
        func chunk(_ delta: String, finish: String? = nil) -> StreamEvent {
            let reason = finish.map { #""\#($0)""# } ?? "null"
            let json = #"{\#(envelope),"choices":[{"index":0,"delta":\#(delta),"finish_reason":\#(reason)}]}"#
            return StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(json)\n\n"), data: ByteBuffer(string: json)))
        }
        let events = pieces.map { chunk(#"{"content":\#(JSONValue.string($0).serialized())}"#) } + [chunk("{}", finish: "stop"), .done]
        let record = record ?? RequestRecord(UsageRecord(requestID: "req_1", requestedModel: "m", upstream: "u", stream: true, caller: nil))
        let context = StageContext(requestID: "req_1", requestedModel: "m", upstreamName: "u", logger: Logger(label: "test"), record: record)
        let request = try ChatRequest(body: ByteBuffer(string: #"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#))
        let response = try await stage.handle(request, context: context) { _, _ in ChatResponse(status: .ok, body: .events(EventStream(events))) }
        guard case .events(let stream) = response.body else { throw GatewayProcessError("no stream") }
        var content = ""
        var finish: [String] = []
        for try await event in stream {
            guard let data = event.frame.data, let json = try? JSONValue(parsing: data.readableBytesView) else { continue }
            for choice in json["choices"]?.arrayValue ?? [] {
                content += choice["delta"]?["content"]?.stringValue ?? ""
                if let reason = choice["finish_reason"]?.stringValue { finish.append(reason) }
            }
        }
        return (content, finish)
    }

    @Test("Verdicts in both shapes; the program starts on first use and serves requests from many callers at once")
    func verdicts() async throws {
        let hook = Self.hook()
        #expect(hook.pid == nil, "nothing runs before the first request")
        #expect(try await hook.check(Self.input("all fine")) == .pass)
        #expect(try await hook.check(Self.input("a forbidden word")) == ModerationHookAnswer(action: .block, rule: "test-forbidden"))
        #expect(try await hook.check(Self.input("a rude word")) == ModerationHookAnswer(action: .redact, rule: "manners", replacement: "a [polite] word"))
        #expect(try await hook.check(Self.input("openai-flagged text")) == ModerationHookAnswer(action: .block, rule: "violence"))
        let pid = try #require(hook.pid)
        let answers = try await withThrowingTaskGroup(of: (Int, ModerationHookAnswer).self) { group in
            for index in 0..<20 {
                group.addTask { (index, try await hook.check(Self.input(index % 2 == 0 ? "iffy \(index)" : "fine \(index)"))) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(answers.count == 20)
        #expect(answers.allSatisfy { $0.value.action == ($0.key % 2 == 0 ? .flag : .pass) })
        #expect(hook.pid == pid, "one process for all")
    }

    @Test("Through the stage: block ends the stream with content_filter; redact replaces the window")
    func throughTheStage() async throws {
        let blocked = try await Self.stream(Self.stage(Self.hook(), failClosed: true), ["First. ", "Then a forb", "idden one. ", "Never."])
        #expect(blocked.content == "First. ")
        #expect(blocked.finish == ["content_filter"])
        let redacted = try await Self.stream(Self.stage(Self.hook(), failClosed: true), ["Be ", "rude. ", "Bye."])
        #expect(redacted.content == "Be [polite]. Bye.")
        #expect(redacted.finish == ["stop"])
    }

    @Test("A hook that times out, fail-open: the text goes on after the timeout; fail-closed: content_filter")
    func timeout() async throws {
        let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "u", stream: true, caller: nil))
        // Started and answering before the timed part: starting counts against the timeout,
        // and a loaded machine can take longer than 300 ms to start Python.
        let openHook = Self.hook()
        #expect(try await openHook.check(Self.input("warm up")) == .pass)
        // The program sleeps 60 s on the first window: the stream can only end (and record
        // timeouts rather than the program's answers) because the stage stopped waiting.
        let open = try await Self.stream(Self.stage(openHook, timeout: .seconds(2), failClosed: false), ["Wait slow:60 please. ", "Done."], record: record)
        #expect(open.content == "Wait slow:60 please. Done.")
        #expect(open.finish == ["stop"])
        // The program is still asleep on the first window, so the second times out too.
        let timedOut = ModerationVerdict(rule: "py", action: .pass, location: "output.content", hook: "py", failure: "timeout")
        #expect(record.snapshot.moderation == [timedOut, timedOut])

        let closedHook = Self.hook()
        #expect(try await closedHook.check(Self.input("warm up")) == .pass)
        let closed = try await Self.stream(Self.stage(closedHook, timeout: .seconds(2), failClosed: true), ["Fine. ", "Wait slow:60 please. ", "Done."])
        #expect(closed.content == "Fine. ")
        #expect(closed.finish == ["content_filter"])
    }

    @Test("A late answer is dropped, with ids and without: the next request gets its own answer")
    func lateAnswers() async throws {
        for extra in [[], ["--no-id"]] {
            let hook = Self.hook(extra)
            #expect(try await hook.check(Self.input("warm up")) == .pass)
            // The stage gives up after 500 ms (fail-open); the program answers "block" at 3 s,
            // while the next request already waits in line behind it.
            let timedOut = try await Self.stream(Self.stage(hook, timeout: .milliseconds(500), failClosed: false), ["slow:3 forbidden. "])
            #expect(timedOut.content == "slow:3 forbidden. ")
            #expect(try await hook.check(Self.input("fine")) == .pass, "not the slow request's block (\(extra))")
            #expect(try await hook.check(Self.input("iffy")).action == .flag)
        }
    }

    @Test("A hook that crashes: fail-open lets the text pass at once, fail-closed blocks; the next request starts it again")
    func crash() async throws {
        let hook = Self.hook()
        #expect(try await hook.check(Self.input("warm up")) == .pass)
        let first = try #require(hook.pid)
        let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "u", stream: true, caller: nil))
        let open = try await Self.stream(Self.stage(hook, failClosed: false), ["One. ", "Then crash. ", "Two."], record: record)
        #expect(open.content == "One. Then crash. Two.")
        #expect(record.snapshot.moderation.map(\.failure) == ["crashed"])
        let second = try #require(hook.pid, "restarted for the next window")
        #expect(second != first)

        let closed = try await Self.stream(Self.stage(hook, failClosed: true), ["One. ", "Then crash. ", "Two."])
        #expect(closed.content == "One. ")
        #expect(closed.finish == ["content_filter"])
        #expect(try await hook.check(Self.input("still there?")) == .pass)
        #expect(hook.pid != second)
    }

    @Test("A program that dies at once fails each request quickly instead of hanging, and is started again each time")
    func diesAtOnce() async throws {
        let hook = CommandModerationHook(name: "dead", arguments: ["/usr/bin/python3", "-c", "import sys; sys.exit(1)"], logger: Logger(label: "test"))
        for _ in 0..<3 {
            do {
                _ = try await hook.check(Self.input("anything"))
                Issue.record("a dead program cannot answer")
            } catch let error as ModerationHookError {
                #expect(error.reason == "crashed")
            }
        }
        let record = RequestRecord(UsageRecord(requestID: "r", requestedModel: "m", upstream: "u", stream: true, caller: nil))
        let closed = try await Self.stream(Self.stage(hook, failClosed: true), ["Hello. "], record: record)
        #expect(closed.finish == ["content_filter"])
        #expect(record.snapshot.moderation.map(\.failure) == ["crashed"])
    }

    @Test("Options: the program is looked up when the config is read; nothing starts until a request")
    func options() throws {
        let settings = ExternalHookSettings(name: "py")
        var options = StageOptions(["command": ["python3", .string(Self.script)]], stage: "moderation")
        let hook = try #require(try CommandModerationHook.make(options: &options, settings: settings) as? CommandModerationHook)
        #expect(hook.arguments[0].hasSuffix("/python3") && hook.arguments[0].hasPrefix("/"))
        #expect(hook.pid == nil)
        var missing = StageOptions(["command": ["no-such-program-here"]], stage: "moderation")
        #expect(throws: StageConfigurationError.self) { try CommandModerationHook.make(options: &missing, settings: settings) }
        var empty = StageOptions(["command": []], stage: "moderation")
        #expect(throws: StageConfigurationError.self) { try CommandModerationHook.make(options: &empty, settings: settings) }
    }
}
