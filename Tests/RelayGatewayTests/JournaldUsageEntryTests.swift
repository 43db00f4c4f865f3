import Foundation
import RelayCore
@testable import RelayGateway
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The request's usage entry in a real journald, read back with `journalctl -o json`.
///
/// journald runs privately: in a mount namespace of its own with tmpfs over its folders, so
/// the test neither needs nor touches a system journal.
@Suite("Usage entries in a real journald", .timeLimit(.minutes(1)))
struct JournaldUsageEntryTests {
    static let canRun = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd-journald")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") && FileManager.default.isExecutableFile(atPath: "/usr/bin/journalctl")

    static let script = #"""
        set -eu
        daemon=$1 config=$2 socket=$3 body=$4 message_id=$5
        mount -t tmpfs -o mode=0755 chatrelayd-tests-run /run/systemd
        mount -t tmpfs -o mode=0755 chatrelayd-tests-log /run/log
        mount -t tmpfs -o mode=0755 chatrelayd-tests-journal /var/log/journal
        mkdir -p /run/systemd/journald.conf.d
        printf '[Journal]\nStorage=volatile\nReadKMsg=no\nAudit=no\nForwardToSyslog=no\nForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\n' \
            > /run/systemd/journald.conf.d/90-chatrelayd-tests.conf
        env -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID /lib/systemd/systemd-journald </dev/null >&2 &
        journald=$!
        trap 'kill $daemon_pid $journald 2>/dev/null || true' EXIT
        for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
        CHATRELAYD_LOG_TARGET=journal "$daemon" serve --config "$config" >&2 &
        daemon_pid=$!
        for _ in $(seq 400); do [ -S "$socket" ] && break; sleep 0.05; done
        curl -sS -N --unix-socket "$socket" -H 'Content-Type: application/json' --data-binary "@$body" \
            http://localhost/v1/chat/completions >/dev/null
        kill -TERM $daemon_pid
        wait $daemon_pid
        journalctl --sync
        journalctl --directory=/run/log/journal --output=json --no-pager "MESSAGE_ID=$message_id"
        """#

    @Test("one entry per request with its fields", .enabled(if: canRun, "needs root, systemd-journald, unshare and journalctl"))
    func usageEntry() async throws {
        let directory = try TestPaths.temporaryDirectory("journal")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/gw.sock"
        try """
        server:
          socket: \(socket)
        upstreams:
          - name: recorded
            kind: cassette
            cassettes: [\(TestPaths.fixtureCassettes)]
        models:
          - name: grok-4-fast
            upstream: recorded
        pipeline:
          - stage: keepalive
          - stage: usage
        """.write(toFile: directory + "/chatrelayd.yaml", atomically: true, encoding: .utf8)
        try GatewayEndToEndTests.chatBody(model: "grok-4-fast", stream: true).write(toFile: directory + "/body.json", atomically: true, encoding: .utf8)
        let result = try await runProcess(
            "/usr/bin/timeout",
            ["40", "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", Self.script, "sh",
             TestPaths.chatrelayd, directory + "/chatrelayd.yaml", socket, directory + "/body.json", LogMessageID.requestCompleted]
        )
        try #require(result.status == 0, "script failed: \(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n")
        try #require(lines.count == 1, "expected one usage entry, got: \(result.standardOutput)\n\(result.standardError)")
        let entry = try JSONValue(parsing: Array(lines[0].utf8))
        func field(_ name: String) -> String? { entry[name]?.stringValue }
        #expect(field("MESSAGE")?.hasPrefix("request completed: grok-4-fast via recorded, status 200, stop, 126+2 tokens") == true, "\(field("MESSAGE") ?? "")")
        #expect(field("MESSAGE_ID") == LogMessageID.requestCompleted)
        #expect(field("PRIORITY") == "6")
        #expect(field("SYSLOG_IDENTIFIER") == "chatrelayd")
        #expect(field("REQUEST_ID")?.hasPrefix("req_") == true)
        #expect(field("MODEL") == "grok-4-fast")
        #expect(field("UPSTREAM") == "recorded")
        #expect(field("SERVED_MODEL") == "grok-4-fast-reasoning")
        #expect(field("STATUS") == "200")
        #expect(field("STREAM") == "true")
        #expect(field("FINISH_REASON") == "stop")
        #expect(field("PROMPT_TOKENS") == "126")
        #expect(field("COMPLETION_TOKENS") == "2")
        #expect(field("REASONING_TOKENS") == "123")
        #expect(field("CACHED_PROMPT_TOKENS") == "125")
        #expect(field("TOTAL_TOKENS") == "251")
        #expect(field("EMPTY_CHUNKS_DROPPED") == "122")
        #expect(field("EVENTS_SENT") == "6")
        #expect(field("CALLER_UID") == "0")
        #expect(field("CALLER_PID").flatMap(Int.init) != nil)
        #expect(field("TTFB_MS") != nil)
        #expect(field("CODE_FILE") != nil)
    }
}
