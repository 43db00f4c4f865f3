import Foundation
import NIOCore
import NIOPosix
import RelayCore
#if canImport(Glibc)
import Glibc
#endif

/// Who is on the other end of a Unix socket connection, as the kernel says (`SO_PEERCRED`).
enum PeerCredentials {
    /// `SO_PEERCRED` from <asm-generic/socket.h>; Glibc's module map does not export it.
    static let soPeerCred: Int32 = 17

    /// The kernel's `struct ucred` (pid_t, uid_t, gid_t), which Swift's Glibc hides behind _GNU_SOURCE.
    struct KernelPeerCredentials {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    static func read(from channel: any Channel) async -> CallerIdentity? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let credentials: KernelPeerCredentials
        do {
            credentials = try await provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET),
                name: SocketOptionName(Self.soPeerCred)
            ).get()
        } catch {
            return nil
        }
        return CallerIdentity(
            uid: credentials.uid,
            gid: credentials.gid,
            pid: credentials.pid,
            unit: Self.systemdUnit(pid: credentials.pid)
        )
    }

    /// The systemd unit (`*.service` or `*.scope`) a process runs in, from `/proc/PID/cgroup`.
    static func systemdUnit(pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        return self.systemdUnit(cgroupFile: text)
    }

    /// Reads the unified (`0::`) or the v1 `name=systemd` hierarchy and takes the innermost unit.
    static func systemdUnit(cgroupFile: String) -> String? {
        let lines = cgroupFile.split(separator: "\n")
        let path = lines.first { $0.hasPrefix("0::") }.map { String($0.dropFirst(3)) }
            ?? lines.first { $0.contains(":name=systemd:") }.flatMap { $0.split(separator: ":", maxSplits: 2).last.map(String.init) }
        guard let path else { return nil }
        return path.split(separator: "/").reversed().first { $0.hasSuffix(".service") || $0.hasSuffix(".scope") }.map(String.init)
    }
}
