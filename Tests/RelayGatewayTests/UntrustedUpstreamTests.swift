import Foundation
import RelayCore
import Testing

/// Upstream responses are untrusted too: a loopback provider that misbehaves on purpose,
/// through the real daemon. Each misbehaviour is bounded (the daemon's peak memory stays
/// far below what the upstream sent) and ends with one clear error event, or is relayed
/// harmlessly; either way the daemon goes on serving the next request.
@Suite("Untrusted upstream responses through the daemon", .timeLimit(.minutes(2)))
struct UntrustedUpstreamTests {
    static func config(loopbackPort: Int, ledger: String) -> String {
        """
        server:
          socket: SOCKET
          max_event_size: 64KiB
          usage_ledger: \(ledger)
        upstreams:
          - name: loop
            kind: openai-compatible
            base_url: http://127.0.0.1:\(loopbackPort)/v1
            idle_timeout: 2s
        models:
          - prefix: loop-
            upstream: loop
        pipeline:
          - stage: usage
          - stage: keepalive
            interval: 1s
        """
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var model: String
        /// The `code` of the one error event that must end the stream; nil when the stream
        /// must instead end normally with `[DONE]`.
        var errorCode: String?
        /// Text in the error message that says what happened.
        var errorMentions: String?
        /// For a stream that must end normally: text of the strange event, relayed as it came.
        var relayed: String?
        var testDescription: String { self.name }
    }

    static let cases: [Case] = [
        Case(name: "an event larger than max_event_size", model: "loop-huge-event", errorCode: "upstream_error", errorMentions: "larger than 65536 bytes"),
        Case(name: "a line that never ends", model: "loop-endless-line", errorCode: "upstream_error", errorMentions: "larger than 65536 bytes"),
        Case(name: "comment lines forever, never a blank line", model: "loop-comment-lines", errorCode: "upstream_error", errorMentions: "larger than 65536 bytes"),
        // Before CommentsOnlyTimeout this one ran for the loopback's whole 15 s and ended with no error event.
        Case(name: "comment blocks, 10,000 a second", model: "loop-comment-flood", errorCode: "upstream_timeout", errorMentions: "nothing but comments"),
        // Passed on as bytes (curl's body shows the bad bytes as U+FFFD), classified "other".
        Case(name: "invalid UTF-8 in a data event", model: "loop-bad-utf8", relayed: #""content":"bad \#u{FFFD}"#),
        Case(name: "JSON nested 20,000 levels deep in a data event", model: "loop-deep-json", relayed: #""content":"deep ""#),
    ]

    @Test("each misbehaviour is bounded, ends clearly, and the daemon serves the next request", arguments: cases)
    func misbehaviour(_ testCase: Case) async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("untrusted")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, ledger: ledger))
        let socket = gateway.socketPath
        let pid = gateway.process.processIdentifier
        // A normal stream first, so that the baseline includes what serving one costs.
        let warmUp = try await curl(socket, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: "loop-seed", stream: true))
        #expect(warmUp.dataEvents.last == "[DONE]")
        let before = try #require(Self.memory(of: pid))

        let response = try await curl(socket, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: testCase.model, stream: true))
        let after = try #require(Self.memory(of: pid))
        let events = response.dataEvents
        #expect(response.status == 200, "\(response.body.prefix(300))")
        #expect(events.filter { $0.contains(#""content":"Olá""#) }.count == 1, "what came before the trouble is relayed once")
        if let code = testCase.errorCode {
            #expect(!events.contains("[DONE]"))
            let errors = events.filter { $0.hasPrefix(#"{"error""#) }
            #expect(errors.count == 1, "one error event: \(errors)")
            let last = try JSONValue(parsing: Array((events.last ?? "").utf8))
            #expect(last["error"]?["code"]?.stringValue == code, "\(events.last ?? "")")
            let message = last["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains(testCase.errorMentions ?? ""), "\(message)")
            // The daemon hung up on the upstream rather than reading it to the end.
            #expect(await upstream.waitFor("cancelled:\(testCase.model)"))
            #expect(upstream.count("finished:\(testCase.model)") == 0)
        } else {
            #expect(events.last == "[DONE]", "\(response.body.suffix(300))")
            #expect(events.contains { $0.contains(#""finish_reason":"stop""#) })
            #expect(events.filter { $0.contains(testCase.relayed ?? "") }.count == 1, "the strange event is relayed once")
        }
        // Peak memory: the upstream sent up to 256 MB; the daemon holds at most one event.
        let growth = after.peakKiB - before.residentKiB
        print("\(testCase.model): VmRSS before \(before.residentKiB) KiB, VmHWM after \(after.peakKiB) KiB, VmRSS after \(after.residentKiB) KiB")
        #expect(growth < 32 * 1024, "peak grew by \(growth) KiB")

        // Still serving, and the troubled request has its usage record.
        let next = try await curl(socket, "POST", "/v1/chat/completions", body: GatewayEndToEndTests.chatBody(model: "loop-seed", stream: true))
        #expect(next.dataEvents.last == "[DONE]")
        #expect(try await gateway.stop() == 0)
        let record = try RetryEndToEndTests.ledgerRecord(ledger, requestID: response.headers["x-request-id"])
        #expect(record["model"]?.stringValue == testCase.model)
        #expect((record["error"]?.stringValue != nil) == (testCase.errorCode != nil), "\(record)")
    }

    /// `VmRSS` and `VmHWM` (peak resident size) of a process, from `/proc/PID/status`.
    static func memory(of pid: Int32) -> (residentKiB: Int, peakKiB: Int)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int? {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { Int($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "") }
        }
        guard let resident = field("VmRSS"), let peak = field("VmHWM") else { return nil }
        return (resident, peak)
    }
}
