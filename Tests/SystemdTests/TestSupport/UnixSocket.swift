#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The failing call and its errno, for test failures that say what went wrong.
struct SocketCallError: Error, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// An `AF_UNIX` socket bound to a filesystem path, closed and unlinked on deinit.
final class BoundUnixSocket {
    let path: String
    let fd: Int32

    /// - Parameter type: `SOCK_DGRAM` for a notify listener, `SOCK_STREAM` for a listener.
    init(path: String, type: __socket_type, listening: Bool = false) throws {
        self.path = path
        self.fd = try openUnixSocket(type)
        let bound = withUnixSocketAddress(path) { bind(self.fd, $0, $1) }
        guard bound == 0 else {
            let code = errno
            close(self.fd)
            throw SocketCallError(call: "bind \(path)", errno: code)
        }
        if listening, listen(self.fd, 8) != 0 {
            let code = errno
            close(self.fd)
            unlink(path)
            throw SocketCallError(call: "listen", errno: code)
        }
    }

    deinit {
        close(self.fd)
        unlink(self.path)
    }

    /// The next datagram, or `nil` when none arrives within `timeout` (poll, no sleeping).
    func receive(timeout: Duration = .seconds(5)) throws -> String? {
        var descriptor = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        let milliseconds = Int32(timeout.components.seconds * 1000)
        let ready = poll(&descriptor, 1, milliseconds)
        guard ready >= 0 else { throw SocketCallError(call: "poll", errno: errno) }
        guard ready > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(self.fd, &buffer, buffer.count, 0)
        guard count >= 0 else { throw SocketCallError(call: "recv", errno: errno) }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}

/// A stream socket connected to the listener at `path`; the caller closes it.
func connectUnixStream(to path: String) throws -> Int32 {
    let fd = try openUnixSocket(SOCK_STREAM)
    guard withUnixSocketAddress(path, { connect(fd, $0, $1) }) == 0 else {
        let code = errno
        close(fd)
        throw SocketCallError(call: "connect \(path)", errno: code)
    }
    return fd
}

private func openUnixSocket(_ type: __socket_type) throws -> Int32 {
    let fd = socket(AF_UNIX, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw SocketCallError(call: "socket", errno: errno) }
    return fd
}

private func withUnixSocketAddress<Result>(
    _ path: String,
    _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
) -> Result {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8.prefix($0.count - 1))) }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
