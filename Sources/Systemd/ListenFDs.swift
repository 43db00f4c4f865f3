internal import CSystemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The sockets systemd opened for this process (socket activation, `sd_listen_fds(3)`), each
/// with the name from `FileDescriptorName=` (systemd's default name is the socket unit's name).
///
/// Adopting the socket instead of binding one lets systemd hold connections while the daemon
/// starts or restarts, and lets the unit keep the socket's ownership and mode.
public struct ListenFDs: Sendable {
    /// The inherited descriptors in the order systemd passed them, starting at fd 3
    /// (`SD_LISTEN_FDS_START`).
    public let sockets: [(fd: Int32, name: String)]

    public init(sockets: [(fd: Int32, name: String)]) {
        self.sockets = sockets
    }

    /// The descriptors passed to this process; empty when the process was not socket-activated
    /// or `LISTEN_PID` names another process. Each descriptor gets `FD_CLOEXEC`.
    ///
    /// The variables are left in place (so this can be called again); call
    /// `unsetEnvironment()` once the sockets are adopted so that children do not see them.
    ///
    /// - Throws: `SystemdError.listenFDsUnreadable` when the variables are malformed.
    public static func fromEnvironment() throws -> ListenFDs {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let count = sd_listen_fds_with_names(0, &names)
        defer { Self.releaseNames(names) }
        if count < 0 {
            throw SystemdError.listenFDsUnreadable(errno: -count)
        }
        var sockets: [(fd: Int32, name: String)] = []
        sockets.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            sockets.append((fd: SD_LISTEN_FDS_START + Int32(index), name: name))
        }
        return ListenFDs(sockets: sockets)
    }

    /// The first descriptor with that name, or `nil`.
    public func socket(named name: String) -> Int32? {
        self.sockets.first { $0.name == name }?.fd
    }

    /// True when `fd` is a listening `AF_UNIX` `SOCK_STREAM` socket, and, when `path` is given,
    /// bound to that filesystem path. Guards against a unit that passes the wrong socket.
    public static func isUnixStreamListener(fd: Int32, path: String? = nil) -> Bool {
        let result: Int32 =
            if let path {
                sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, path, 0)
            } else {
                sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0)
            }
        return result > 0
    }

    /// Removes `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES`, so that processes this daemon
    /// starts do not try to adopt descriptors that are not theirs.
    public static func unsetEnvironment() {
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDNAMES")
    }

    private static func releaseNames(_ names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        guard let names else { return }
        var index = 0
        while let name = names[index] {
            free(name)
            index += 1
        }
        free(names)
    }
}
