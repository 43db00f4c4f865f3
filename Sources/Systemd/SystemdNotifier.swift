internal import CSystemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Tells the service manager about the daemon's state (`sd_notify(3)`), so a `Type=notify` or
/// `Type=notify-reload` unit knows when the daemon is ready, reloading, stopping and alive.
///
/// Every method is a no-op that returns `false` when `NOTIFY_SOCKET` is not set, so the same
/// code runs under systemd, in a terminal and in tests. The environment is never unset, so a
/// reload or a later status update can still reach the manager.
///
/// Values are sanitised before sending: newlines (and NUL bytes) become spaces, so that text
/// from a caller, such as a status line built from an error, cannot add assignments of its own.
public struct SystemdNotifier: Sendable {
    /// The process the messages are about; `nil` means this process (`sd_notify`).
    public let pid: Int32?

    /// - Parameter pid: send on behalf of another process with `sd_pid_notify` (it must be the
    ///   unit's main process or `NotifyAccess=all` must be set); `nil` for this process.
    public init(pid: Int32? = nil) {
        self.pid = pid
    }

    /// True when the service manager listens for notifications (`NOTIFY_SOCKET` is set).
    public var isEnabled: Bool {
        guard let socket = ProcessEnvironment.value("NOTIFY_SOCKET") else { return false }
        return !socket.isEmpty
    }

    /// Startup is complete: systemd moves the unit to "active" and starts its dependents.
    @discardableResult
    public func ready() throws -> Bool {
        try self.send([("READY", "1")])
    }

    /// A configuration reload has begun. `Type=notify-reload` (systemd 253+) needs the
    /// monotonic timestamp in the same datagram to tell this reload from an earlier one;
    /// send `ready()` when the reload is done.
    @discardableResult
    public func reloading() throws -> Bool {
        try self.send([("RELOADING", "1"), ("MONOTONIC_USEC", String(Self.monotonicMicroseconds()))])
    }

    /// Graceful shutdown has begun, so systemd does not mistake the drain for a hang.
    @discardableResult
    public func stopping() throws -> Bool {
        try self.send([("STOPPING", "1")])
    }

    /// A one-line human-readable state shown by `systemctl status`.
    @discardableResult
    public func status(_ text: String) throws -> Bool {
        try self.send([("STATUS", text)])
    }

    /// Keeps a unit with `WatchdogSec=` alive; send every `WatchdogSettings.pingInterval`.
    @discardableResult
    public func watchdogPing() throws -> Bool {
        try self.send([("WATCHDOG", "1")])
    }

    /// Startup failed: systemd records the errno and shows the status in `systemctl status`.
    @discardableResult
    public func startupFailed(errno: Int32, status: String) throws -> Bool {
        try self.send([("ERRNO", String(errno)), ("STATUS", status)])
    }

    /// Sends the assignments as one datagram, `NAME=value` per line, in the order given.
    ///
    /// - Returns: `true` when the message was sent, `false` when `NOTIFY_SOCKET` is unset.
    /// - Throws: `SystemdError.invalidAssignment` for an empty name or one containing `=` or a
    ///   newline; `SystemdError.notifyFailed` when the socket refused the message.
    @discardableResult
    public func send(_ assignments: [(String, String)]) throws -> Bool {
        let message = try Self.encode(assignments)
        let result: Int32 =
            if let pid = self.pid {
                sd_pid_notify(pid, 0, message)
            } else {
                sd_notify(0, message)
            }
        if result < 0 {
            throw SystemdError.notifyFailed(errno: -result, message: message)
        }
        return result > 0
    }

    static func encode(_ assignments: [(String, String)]) throws -> String {
        var lines: [String] = []
        lines.reserveCapacity(assignments.count)
        for (name, value) in assignments {
            guard !name.isEmpty, !name.contains(where: { $0 == "=" || $0.isNewline || $0 == "\0" }) else {
                throw SystemdError.invalidAssignment(name: name)
            }
            lines.append("\(name)=\(Self.singleLine(value))")
        }
        return lines.joined(separator: "\n")
    }

    static func singleLine(_ value: String) -> String {
        guard value.contains(where: { $0.isNewline || $0 == "\0" }) else { return value }
        return String(value.map { $0.isNewline || $0 == "\0" ? " " : $0 })
    }

    static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
