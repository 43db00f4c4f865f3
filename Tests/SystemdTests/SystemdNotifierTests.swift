import Testing

@testable import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ProcessEnvironmentTests {
    /// Sends through a real `AF_UNIX` datagram socket named by `NOTIFY_SOCKET`, the way
    /// systemd listens, and compares the exact datagrams.
    @Suite("SystemdNotifier")
    struct SystemdNotifierTests {
        /// A fresh datagram listener with `NOTIFY_SOCKET` pointing at it; the caller restores
        /// the environment when done.
        private func notifyListener() throws -> (BoundUnixSocket, EnvironmentOverride) {
            let listener = try BoundUnixSocket(path: temporarySocketPath("notify"), type: SOCK_DGRAM)
            return (listener, EnvironmentOverride(["NOTIFY_SOCKET": listener.path]))
        }

        @Test func withoutNotifySocketEverythingIsANoOp() throws {
            let environment = EnvironmentOverride(["NOTIFY_SOCKET": nil])
            defer { environment.restore() }
            let notifier = SystemdNotifier()
            #expect(!notifier.isEnabled)
            #expect(try notifier.ready() == false)
            #expect(try notifier.reloading() == false)
            #expect(try notifier.status("idle") == false)
            #expect(try notifier.watchdogPing() == false)
            #expect(try notifier.stopping() == false)
            #expect(try notifier.startupFailed(errno: EADDRINUSE, status: "bind failed") == false)
        }

        @Test func readyStatusStoppingAndWatchdogArriveAsSingleAssignments() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            let notifier = SystemdNotifier()
            #expect(notifier.isEnabled)

            #expect(try notifier.ready())
            #expect(try listener.receive() == "READY=1")
            try notifier.status("serving 3 streams")
            #expect(try listener.receive() == "STATUS=serving 3 streams")
            try notifier.watchdogPing()
            #expect(try listener.receive() == "WATCHDOG=1")
            try notifier.stopping()
            #expect(try listener.receive() == "STOPPING=1")
        }

        @Test func reloadingCarriesTheMonotonicClockInTheSameDatagram() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            let before = SystemdNotifier.monotonicMicroseconds()
            try SystemdNotifier().reloading()
            let after = SystemdNotifier.monotonicMicroseconds()

            let datagram = try #require(try listener.receive())
            let lines = datagram.split(separator: "\n", omittingEmptySubsequences: false)
            try #require(lines.count == 2, "got \(datagram.debugDescription)")
            #expect(lines[0] == "RELOADING=1")
            #expect(lines[1].hasPrefix("MONOTONIC_USEC="))
            let digits = lines[1].dropFirst("MONOTONIC_USEC=".count)
            #expect(!digits.isEmpty && digits.allSatisfy { $0.isASCII && $0.isNumber })
            let stamp = try #require(UInt64(digits))
            #expect(before <= stamp && stamp <= after)
        }

        @Test func statusTextCannotInjectAssignments() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            try SystemdNotifier().status("draining\nREADY=1\r\nMAINPID=1")
            #expect(try listener.receive() == "STATUS=draining READY=1 MAINPID=1")
        }

        @Test func startupFailureSendsErrnoAndStatus() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            try SystemdNotifier().startupFailed(errno: EADDRINUSE, status: "cannot bind\nsocket")
            #expect(try listener.receive() == "ERRNO=\(EADDRINUSE)\nSTATUS=cannot bind socket")
        }

        @Test func genericSendKeepsTheOrderGiven() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            try SystemdNotifier().send([("EXTEND_TIMEOUT_USEC", "5000000"), ("STATUS", "migrating")])
            #expect(try listener.receive() == "EXTEND_TIMEOUT_USEC=5000000\nSTATUS=migrating")
        }

        @Test func sendingOnBehalfOfThisProcessByPidAlsoArrives() throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            try SystemdNotifier(pid: getpid()).ready()
            #expect(try listener.receive() == "READY=1")
        }

        @Test(arguments: ["", "A=B", "TWO\nLINES"])
        func invalidAssignmentNamesAreRejectedBeforeSending(name: String) throws {
            let (listener, environment) = try self.notifyListener()
            defer { environment.restore() }
            #expect(throws: SystemdError.invalidAssignment) {
                try SystemdNotifier().send([(name, "1")])
            }
            #expect(try listener.receive(timeout: .zero) == nil)
        }

        @Test func aMissingSocketIsReportedNotIgnored() throws {
            let environment = EnvironmentOverride(["NOTIFY_SOCKET": temporarySocketPath("absent")])
            defer { environment.restore() }
            let error = #expect(throws: SystemdError.notifyFailed) {
                try SystemdNotifier().ready()
            }
            #expect(error?.errno == ENOENT)
        }
    }
}
