import Foundation
import RelayCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon as systemd drives it, without systemd: readiness, STATUS, the watchdog and its
/// health gate, reload by signal and by command, drain on SIGTERM, and socket activation.
@Suite("Daemon lifecycle (sd_notify, reload, drain, socket activation)", .timeLimit(.minutes(2)))
struct DaemonLifecycleTests {
    /// A gateway with the recorded seed (`grok-4-fast`) and the loopback (`loop-*`); a
    /// `ledger` path turns the usage ledger on, `pipeline` replaces the default stages.
    static func config(loopbackPort: Int, extraModels: String = "", drain: String = "20s", ledger: String? = nil, pipeline: [String] = []) -> String {
        let ledgerLine = ledger.map { "\n  usage_ledger: \($0)" } ?? ""
        let stages = pipeline.isEmpty ? "" : "\npipeline:" + pipeline.map { "\n  - stage: \($0)" }.joined()
        return """
        server:
          socket: SOCKET
          drain_timeout: \(drain)\(ledgerLine)
        upstreams:
          - name: loop
            kind: openai-compatible
            base_url: http://127.0.0.1:\(loopbackPort)/v1
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
        models:
          - name: grok-4-fast
            upstream: recorded
          - prefix: loop-
            upstream: loop
        \(extraModels)\(stages)
        """
    }

    static func streamBody(_ model: String) -> String {
        GatewayEndToEndTests.chatBody(model: model, stream: true)
    }

    @Test("READY, STATUS, watchdog pings only while healthy, RELOADING then READY on SIGHUP")
    func notifyProtocol() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let gateway = try await GatewayProcess.start(
            config: Self.config(loopbackPort: upstream.port),
            environment: ["WATCHDOG_USEC": "1000000", "CHATRELAYD_TEST_HOOKS": "1"]
        )
        defer { gateway.signal(SIGKILL) }
        #expect(gateway.notifySocket.received.contains { $0.contains("READY=1") })

        let steady = try await gateway.notifications(during: 2.2)
        let pings = steady.filter { $0 == "WATCHDOG=1" }.count
        #expect(pings >= 3 && pings <= 6, "pings at half of WATCHDOG_USEC=1s: \(steady)")
        #expect(steady.contains { $0.hasPrefix("STATUS=serving: 0 streams") }, "\(steady)")

        gateway.signal(SIGHUP)
        #expect(try await gateway.waitForNotification("READY=1"))
        let reloading = try #require(gateway.notifySocket.received.last { $0.hasPrefix("RELOADING=1") })
        let monotonic = reloading.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }
        #expect(monotonic.map { UInt64($0.dropFirst("MONOTONIC_USEC=".count)) != nil } == true, "\(reloading)")

        // Wedge the event loops (test-only switch): the probe fails, the pings stop.
        gateway.signal(SIGUSR2)
        _ = try await gateway.notifications(during: 0.8)  // a ping already under way may still land
        let stalled = try await gateway.notifications(during: 2.0)
        #expect(!stalled.contains("WATCHDOG=1"), "a stalled daemon must not ping: \(stalled)")
        #expect(gateway.log.contains("withholding watchdog pings"))
    }

    @Test("SIGTERM: STOPPING=1, streams finish within the drain time, the rest end with an error event, exit 0")
    func stopDrains() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, drain: "12s"))
        let socket = gateway.socketPath
        async let short = curl(socket, "POST", "/v1/chat/completions", body: Self.streamBody("loop-seed-slow"))
        async let long = curl(socket, "POST", "/v1/chat/completions", body: Self.streamBody("loop-slow"))
        #expect(await upstream.waitFor("request:loop-seed-slow"))
        #expect(await upstream.waitFor("request:loop-slow"))
        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForNotification("STOPPING=1"))
        let (finished, cut) = try await (short, long)
        #expect(finished.dataEvents.count == 128)
        #expect(finished.dataEvents.last == "[DONE]")
        #expect(!cut.dataEvents.contains("[DONE]"))
        let last = try JSONValue(parsing: Array((cut.dataEvents.last ?? "").utf8))
        #expect(last["error"]?["code"]?.stringValue == "shutting_down", "\(cut.body.suffix(300))")
        #expect(try await gateway.stop() == 0)
        let log = gateway.log
        #expect(log.components(separatedBy: "request completed").count - 1 == 2, "each stream has its record:\n\(log)")
        #expect(log.contains("stopping: no new connections"))
    }

    @Test("reload: new requests see the new configuration, a stream in flight finishes on the old, a bad file changes nothing")
    func reloadByCommand() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port))
        let configPath = gateway.directory + "/chatrelayd.yaml"
        async let stream = curl(gateway.socketPath, "POST", "/v1/chat/completions", body: Self.streamBody("loop-seed-slow"))
        #expect(await upstream.waitFor("request:loop-seed-slow"))

        let extended = Self.config(loopbackPort: upstream.port, extraModels: "  - name: grok-new\n    upstream: recorded\n    upstream_model: grok-4-fast")
            .replacingOccurrences(of: "SOCKET", with: gateway.socketPath)
        try extended.write(toFile: configPath, atomically: true, encoding: .utf8)
        let reload = try await runProcess(TestPaths.chatrelayd, ["reload", "--config", configPath])
        #expect(reload.status == 0, "\(reload.standardError)")
        #expect(reload.standardOutput.contains("generation 2"))
        let models = try await curl(gateway.socketPath, "GET", "/v1/models")
        #expect(models.body.contains(#""grok-new""#))

        let inFlight = try await stream
        #expect(inFlight.dataEvents.count == 128, "the stream in flight is untouched by the reload")
        #expect(inFlight.dataEvents.last == "[DONE]")

        try "models: [".write(toFile: configPath, atomically: true, encoding: .utf8)
        let bad = try await runProcess(TestPaths.chatrelayd, ["reload", "--config", configPath, "--socket", gateway.socketPath])
        #expect(bad.status != 0)
        #expect(bad.standardError.contains("reload failed"))
        let still = try await curl(gateway.socketPath, "GET", "/v1/models")
        #expect(still.body.contains(#""grok-new""#), "a bad file keeps the running configuration")
        #expect(gateway.log.contains("reload failed; still serving the previous configuration"))
        #expect(try await gateway.stop() == 0)
    }

    @Test(
        "socket activation: the daemon adopts the socket systemd-socket-activate passes and serves the queued client",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate"), "needs systemd-socket-activate")
    )
    func socketActivation() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let gateway = try await GatewayProcess.start(
            config: Self.config(loopbackPort: upstream.port),
            launcher: ["/usr/bin/systemd-socket-activate", "-l", "SOCKET", "--fdname=gateway", "-E", "NOTIFY_SOCKET"],
            awaitReady: false
        )
        // systemd-socket-activate creates the socket, then waits for a first connection.
        let socket = gateway.socketPath
        let appeared = try await onOwnThread {
            for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
            return FileManager.default.fileExists(atPath: socket)
        }
        try #require(appeared, "systemd-socket-activate did not create \(socket): \(gateway.log)")
        // This connection is queued in the backlog and served once the daemon has started.
        let request = RawUnixClient.post("/v1/chat/completions", json: Self.streamBody("grok-4-fast"))
        let response = try await onOwnThread { try RawUnixClient.readUntil("data: [DONE]", socketPath: socket, request: request) }
        #expect(response.hasPrefix("HTTP/1.1 200"))
        #expect(response.contains("data: [DONE]"))
        #expect(try await gateway.waitForNotification("READY=1"))
        #expect(gateway.log.contains("adopted the socket systemd passed"))
        #expect(try await gateway.stop() == 0)
        #expect(FileManager.default.fileExists(atPath: socket), "an adopted socket is systemd's to remove")
    }
}
