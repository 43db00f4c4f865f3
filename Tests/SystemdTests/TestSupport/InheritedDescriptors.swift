#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Makes a socket look socket-activated inside this test process without moving anything.
///
/// systemd passes descriptors as a run starting at fd 3. The obvious trick, `dup2` onto fd 3,
/// is unsafe here: in a `swift test` process fd 3 is already open (libdispatch's epoll
/// instance, the first descriptor the runtime creates), and swapping it for a socket, even
/// for a moment, makes Dispatch's `epoll_wait`/`epoll_ctl` calls fail on the wrong descriptor
/// and lose the timers and I/O events of whatever runs meanwhile. Instead the socket stays where
/// `socket(2)` put it, the lowest free descriptor, so fds 3 up to it are all open, and the
/// environment announces that whole run: the descriptors before it as `unknown` (systemd's
/// own name for unnamed ones), the socket under its name. When fd 3 is free, the socket *is*
/// fd 3 and this is exactly what systemd does. `sd_listen_fds` sets `FD_CLOEXEC` on every
/// announced descriptor; `restore()` puts back the flags the others had.
struct InheritedDescriptors {
    let socket: Int32
    private let othersFlags: [(fd: Int32, flags: Int32)]

    init(socket: Int32) throws {
        guard socket >= 3 else { throw SocketCallError(call: "socket below fd 3", errno: EBADF) }
        self.socket = socket
        self.othersFlags = try (3..<socket).map { fd in
            let flags = fcntl(fd, F_GETFD)
            guard flags >= 0 else { throw SocketCallError(call: "fd \(fd) below the socket is not open", errno: errno) }
            return (fd, flags)
        }
    }

    /// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` announcing fds 3 through `socket`.
    func environment(socketName: String) -> [String: String?] {
        let names = Array(repeating: "unknown", count: self.othersFlags.count) + [socketName]
        return [
            "LISTEN_PID": String(getpid()),
            "LISTEN_FDS": String(names.count),
            "LISTEN_FDNAMES": names.joined(separator: ":"),
        ]
    }

    func restore() {
        for (fd, flags) in self.othersFlags {
            _ = fcntl(fd, F_SETFD, flags)
        }
    }
}
