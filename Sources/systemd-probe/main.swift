// Test helper for SystemdTests: runs the Systemd module in a process of its own, where the
// test can hand it a private journald or socket-activation descriptors. Not shipped.
import Logging
import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "journal" where arguments.count == 2:
    JournalProbe.run(token: arguments[arguments.startIndex + 1])
case "listen-fds" where arguments.count == 2:
    exit(ListenFDsProbe.run(path: arguments[arguments.startIndex + 1]))
default:
    print("usage: systemd-probe journal TOKEN | listen-fds SOCKET-PATH")
    exit(64)
}
