import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs a private journald and reads back what `JournaldLogHandler` sent it.
///
/// How journald is started (works standalone on Debian 12, systemd 252, as root, with no
/// systemd as PID 1): `unshare --mount --propagation private` gives the script its own mount
/// namespace, so the tmpfs mounted on `/run/systemd`, `/run/log` and `/var/log/journal` hides
/// the host's (and any other journald's) sockets and files and disappears with the
/// namespace. A drop-in in `/run/systemd/journald.conf.d` keeps the journal in memory
/// (`Storage=volatile`, written to `/run/log/journal/<machine-id>/`) and turns off kmsg,
/// audit and forwarding. journald then binds `/run/systemd/journal/socket`, the path
/// `sd_journal_sendv` always uses, so the probe needs no configuration. `journalctl --sync`
/// waits until journald has written everything it received, and `journalctl --directory`
/// reads the private files.
private let privateJournaldScript = #"""
    set -eu
    probe=$1 token=$2
    mount -t tmpfs -o mode=0755 systemd-tests-run /run/systemd
    mount -t tmpfs -o mode=0755 systemd-tests-log /run/log
    mount -t tmpfs -o mode=0755 systemd-tests-journal /var/log/journal
    mkdir -p /run/systemd/journald.conf.d
    cat > /run/systemd/journald.conf.d/90-systemd-tests.conf <<'CONF'
    [Journal]
    Storage=volatile
    ReadKMsg=no
    Audit=no
    ForwardToSyslog=no
    ForwardToKMsg=no
    ForwardToConsole=no
    ForwardToWall=no
    CONF
    env -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID /lib/systemd/systemd-journald </dev/null >&2 &
    journald=$!
    trap 'kill $journald 2>/dev/null || true; wait $journald 2>/dev/null || true' EXIT
    for _ in $(seq 200); do
        [ -S /run/systemd/journal/socket ] && break
        kill -0 $journald 2>/dev/null || { echo "systemd-journald exited early" >&2; exit 1; }
        sleep 0.05
    done
    [ -S /run/systemd/journal/socket ] || { echo "systemd-journald did not bind its socket" >&2; exit 1; }
    "$probe" journal "$token"
    journalctl --sync
    journalctl --directory=/run/log/journal --output=json --no-pager "REQUEST_ID=$token"
    """#

private let canRunPrivateJournald =
    getuid() == 0 && isExecutable("/lib/systemd/systemd-journald") && isExecutable("/usr/bin/unshare")
    && isExecutable("/usr/bin/journalctl")

extension ProcessEnvironmentTests {
    @Suite("JournaldLogHandler round trip through a real journald", .timeLimit(.minutes(1)))
    struct JournaldRoundTripTests {
        @Test(
            .enabled(
                if: canRunPrivateJournald,
                "needs root, /lib/systemd/systemd-journald, unshare and journalctl to run a private journald"
            )
        )
        func fieldsComeBackFromJournalctl() throws {
            let probe = try #require(ProbeExecutable.path, "systemd-probe is not built next to the test binary")
            let token = randomToken()
            let result = try runChildProcess(
                "/usr/bin/timeout",
                [
                    "30", "/usr/bin/unshare", "--mount", "--propagation", "private",
                    "/bin/sh", "-c", privateJournaldScript, "sh", probe, token,
                ]
            )
            try #require(result.status == 0, "script failed: \(result.standardError)")

            let lines = result.standardOutput.split(separator: "\n")
            try #require(lines.count == 1, "expected one entry, got: \(result.standardOutput)")
            let object = try JSONSerialization.jsonObject(with: Data(lines[0].utf8))
            let entry = try #require(object as? [String: Any])
            func field(_ name: String) -> String? { entry[name] as? String }

            #expect(field("MESSAGE") == "probe \(token)\nsecond line")
            #expect(field("PRIORITY") == "4")
            #expect(field("SYSLOG_IDENTIFIER") == "systemd-probe")
            #expect(field("CODE_FILE") == "Probe/Journal.swift")
            #expect(field("CODE_LINE") == "4242")
            #expect(field("CODE_FUNC") == "emitProbeEntry(token:)")
            #expect(field("LOGGER_LABEL") == "probe.journal")
            #expect(field("MESSAGE_ID") == "550e8400e29b41d4a716446655440000")
            #expect(field("REQUEST_ID") == token)
            #expect(field("MODEL") == "gpt-probe")
            #expect(field("PROVIDED_BY") == "provider")
            #expect(field("MULTI_LINE") == "first\nsecond")
            #expect(field("F_9LIVES") == "cat")
            #expect(field("F_MESSAGE") == "shadowed")
            #expect(field("NESTED") == #"["inner": "value"]"#)
            #expect(field("_TRANSPORT") == "journal")
        }
    }
}
