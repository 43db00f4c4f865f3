import Foundation
import RelayCore
#if canImport(Glibc)
import Glibc
#endif

/// Completes what the kernel said about a peer: user and group names from the user and
/// group databases, the supplementary groups from `/proc` when the socket could not say,
/// and the systemd unit from `/proc/PID/cgroup`.
///
/// Everything read through `/proc/PID` is trusted only if PID is still the process that
/// connected: with a pidfd (`SO_PEERPIDFD`), the process must still be alive after the
/// read (a live process keeps its pid); without one, the file's effective uid must be the
/// peer's. Otherwise a caller could connect, exit, and let its pid be reused by a process
/// in a unit the policy favours.
///
/// Under the shipped unit (`ProtectProc=default`) the daemon can read other users'
/// `/proc/PID/cgroup`; with `ProtectProc=invisible` the unit would always be missing.
enum CallerIdentityReader {
    static func identity(uid: UInt32, gid: UInt32, pid: Int32, groups socketGroups: [UInt32]?, pidfd: Int32?) -> CallerIdentity {
        defer { if let pidfd { close(pidfd) } }
        // /proc/PID/status is needed only when the kernel gave no pidfd (to check that the
        // pid is still the caller) or no group list; it cost 5% of the CPU of accepting
        // 5,000 connections when read for every one.
        var status = pidfd == nil || socketGroups == nil ? self.procStatus(pid: pid) : nil
        var (unit, userUnit) = PeerCredentials.systemdUnits(pid: pid)
        let samePeer: Bool
        if let pidfd {
            samePeer = self.isAlive(pidfd: pidfd)
        } else {
            samePeer = status?.effectiveUID == uid
        }
        if !samePeer {
            status = nil
            unit = nil
            userUnit = nil
        }
        let groups = socketGroups ?? status?.groups ?? []
        return CallerIdentity(
            uid: uid,
            gid: gid,
            pid: pid,
            user: self.userName(uid),
            group: self.groupName(gid),
            supplementaryGroups: groups.map { CallerIdentity.Group(id: $0, name: self.groupName($0)) },
            unit: unit,
            userUnit: userUnit
        )
    }

    /// What `/proc/PID/status` says about a process's ids.
    struct ProcStatus: Equatable {
        var effectiveUID: UInt32?
        var groups: [UInt32]
    }

    static func procStatus(pid: Int32) -> ProcStatus? {
        guard pid > 0, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        return self.procStatus(parsing: text)
    }

    /// Reads the `Uid:` (real, effective, saved, fs) and `Groups:` lines.
    static func procStatus(parsing text: String) -> ProcStatus {
        var status = ProcStatus(effectiveUID: nil, groups: [])
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Uid:") {
                let fields = line.dropFirst(4).split(whereSeparator: \.isWhitespace)
                status.effectiveUID = fields.count > 1 ? UInt32(fields[1]) : nil
            } else if line.hasPrefix("Groups:") {
                status.groups = line.dropFirst(7).split(whereSeparator: \.isWhitespace).compactMap { UInt32($0) }
            }
        }
        return status
    }

    /// A pidfd polls readable once its process has exited.
    static func isAlive(pidfd: Int32) -> Bool {
        var descriptor = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 0
    }

    static func userName(_ uid: UInt32) -> String? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        return self.withLookupBuffer { buffer in
            let status = getpwuid_r(uid, &entry, buffer.baseAddress!, buffer.count, &result)
            guard status != ERANGE else { return .tooSmall }
            guard status == 0, result != nil, let name = entry.pw_name else { return .done(nil) }
            return .done(String(cString: name))
        }
    }

    static func groupName(_ gid: UInt32) -> String? {
        var entry = group()
        var result: UnsafeMutablePointer<group>?
        return self.withLookupBuffer { buffer in
            let status = getgrgid_r(gid, &entry, buffer.baseAddress!, buffer.count, &result)
            guard status != ERANGE else { return .tooSmall }
            guard status == 0, result != nil, let name = entry.gr_name else { return .done(nil) }
            return .done(String(cString: name))
        }
    }

    private enum Lookup {
        case done(String?)
        case tooSmall
    }

    /// Runs a `get*_r` lookup with a buffer that grows on `ERANGE` (large groups need it).
    private static func withLookupBuffer(_ body: (UnsafeMutableBufferPointer<CChar>) -> Lookup) -> String? {
        var size = 4096
        while size <= 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            switch buffer.withUnsafeMutableBufferPointer({ body($0) }) {
            case .done(let name): return name
            case .tooSmall: size *= 4
            }
        }
        return nil
    }
}
