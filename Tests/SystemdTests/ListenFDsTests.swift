import Testing

@testable import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ProcessEnvironmentTests {
    @Suite("ListenFDs", .timeLimit(.minutes(1)))
    struct ListenFDsTests {
        // Adoption itself is checked with the real systemd-socket-activate below (and in
        // DaemonLifecycleTests): moving descriptors onto fd 3 inside this process raced with
        // every other suite that opens descriptors in parallel.

        @Test func aDatagramSocketIsNotAStreamListener() throws {
            let socket = try BoundUnixSocket(path: temporarySocketPath("dgram"), type: SOCK_DGRAM)
            #expect(!ListenFDs.isUnixStreamListener(fd: socket.fd))
            #expect(!ListenFDs.isUnixStreamListener(fd: -1))
        }

        @Test func nothingInheritedWithoutVariables() throws {
            let environment = EnvironmentOverride(["LISTEN_PID": nil, "LISTEN_FDS": nil, "LISTEN_FDNAMES": nil])
            defer { environment.restore() }
            #expect(try ListenFDs.fromEnvironment().sockets.isEmpty)
        }

        @Test func nothingInheritedWhenMeantForAnotherProcess() throws {
            let otherPid = getpid() == 1 ? 2 : 1
            let environment = EnvironmentOverride([
                "LISTEN_PID": String(otherPid), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "gateway",
            ])
            defer { environment.restore() }
            #expect(try ListenFDs.fromEnvironment().sockets.isEmpty)
        }

        @Test func malformedCountIsAnError() throws {
            let environment = EnvironmentOverride([
                "LISTEN_PID": String(getpid()), "LISTEN_FDS": "many", "LISTEN_FDNAMES": nil,
            ])
            defer { environment.restore() }
            #expect(throws: SystemdError.listenFDsUnreadable) {
                try ListenFDs.fromEnvironment()
            }
        }

        @Test func unsetEnvironmentRemovesAllThreeVariables() throws {
            let environment = EnvironmentOverride(["LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "gateway"])
            defer { environment.restore() }
            ListenFDs.unsetEnvironment()
            #expect(getenv("LISTEN_PID") == nil)
            #expect(getenv("LISTEN_FDS") == nil)
            #expect(getenv("LISTEN_FDNAMES") == nil)
        }

        /// The real thing: `systemd-socket-activate` binds the socket, waits for a first
        /// connection, then execs the probe with fd 3 and LISTEN_* set for the probe's pid.
        @Test(.enabled(if: isExecutable("/usr/bin/systemd-socket-activate"), "needs systemd-socket-activate"))
        func adoptsTheSocketSystemdSocketActivatePasses() throws {
            let probe = try #require(ProbeExecutable.path, "systemd-probe is not built next to the test binary")
            let path = temporarySocketPath("activate")
            defer { unlink(path) }
            let activator = try ChildProcess(
                "/usr/bin/timeout",
                ["20", "/usr/bin/systemd-socket-activate", "-l", path, "--fdname=gateway", probe, "listen-fds", path]
            )
            let listening = activator.waitForStandardError(containing: "Listening on")
            try #require(listening.found, "systemd-socket-activate did not start: \(listening.text)")

            let client = try connectUnixStream(to: path)
            defer { close(client) }
            let result = activator.finish()

            #expect(result.status == 0, "stderr: \(result.standardError)")
            let lines = result.standardOutput.split(separator: "\n").map(String.init)
            #expect(
                lines == [
                    "count=1", "socket=3:gateway", "gateway=3", "listener=true", "listenerAtPath=true",
                    "listenerAtOtherPath=false", "environmentAfterUnset=absent",
                ]
            )
        }
    }
}
