import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Gets a Unix socket path ready to bind, without ever stealing a live socket.
///
/// A socket file whose listener answers belongs to a running instance: refuse to start.
/// One nobody answers on is left over from a crash: remove it. Anything else at the path
/// is not ours to delete.
enum UnixSocketPath {
    static func prepare(_ path: String) throws(ConfigError) {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw ConfigError("cannot create the socket's folder \(directory): \(error.localizedDescription)")
            }
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // nothing there
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ConfigError("\(path) exists and is not a socket; refusing to replace it")
        }
        if Self.isAnswering(path) {
            throw ConfigError("another process is already listening on \(path); refusing to take its socket")
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw ConfigError("cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Whether something accepts connections on the socket at `path`.
    static func isAnswering(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0
    }

    /// Gives the socket file the configured mode once it exists.
    static func setMode(_ path: String, mode: UInt16) throws(ConfigError) {
        guard chmod(path, mode_t(mode)) == 0 else {
            throw ConfigError("cannot set mode \(String(mode, radix: 8)) on \(path): \(String(cString: strerror(errno)))")
        }
    }
}
