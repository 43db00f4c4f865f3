#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failure reported by libsystemd, kept as a struct around a private code so that new
/// kinds of failure can be added without breaking callers that switch on the existing ones.
public struct SystemdError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case notifyFailed
        case invalidAssignment
        case watchdogUnreadable
        case listenFDsUnreadable
    }

    private let code: Code

    /// The `errno` value libsystemd returned (as a positive number), or 0 when the failure was
    /// found on the Swift side before any call was made.
    public let errno: Int32

    /// What was being attempted, for the log line.
    public let context: String

    private init(_ code: Code, errno: Int32, context: String) {
        self.code = code
        self.errno = errno
        self.context = context
    }

    /// `sd_notify`/`sd_pid_notify` could not deliver a message to `NOTIFY_SOCKET`.
    public static let notifyFailed = SystemdError(.notifyFailed, errno: 0, context: "")
    /// A notify assignment had an empty name or a name containing `=` or a newline.
    public static let invalidAssignment = SystemdError(.invalidAssignment, errno: 0, context: "")
    /// `WATCHDOG_USEC`/`WATCHDOG_PID` are set but malformed.
    public static let watchdogUnreadable = SystemdError(.watchdogUnreadable, errno: 0, context: "")
    /// `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES` are set but malformed.
    public static let listenFDsUnreadable = SystemdError(.listenFDsUnreadable, errno: 0, context: "")

    static func notifyFailed(errno: Int32, message: String) -> SystemdError {
        SystemdError(.notifyFailed, errno: errno, context: message)
    }

    static func invalidAssignment(name: String) -> SystemdError {
        SystemdError(.invalidAssignment, errno: 0, context: name)
    }

    static func watchdogUnreadable(errno: Int32) -> SystemdError {
        SystemdError(.watchdogUnreadable, errno: errno, context: "sd_watchdog_enabled")
    }

    static func listenFDsUnreadable(errno: Int32) -> SystemdError {
        SystemdError(.listenFDsUnreadable, errno: errno, context: "sd_listen_fds_with_names")
    }

    /// Errors compare by kind only, so `error == .notifyFailed` works whatever the errno was.
    public static func == (lhs: SystemdError, rhs: SystemdError) -> Bool {
        lhs.code == rhs.code
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.code)
    }

    public var description: String {
        let reason = self.errno == 0 ? "" : ": \(String(cString: strerror(self.errno)))"
        switch self.code {
        case .notifyFailed: return "systemd notify failed (\(self.context))\(reason)"
        case .invalidAssignment: return "invalid systemd notify assignment name '\(self.context)'"
        case .watchdogUnreadable: return "cannot read the systemd watchdog settings\(reason)"
        case .listenFDsUnreadable: return "cannot read the socket-activation descriptors\(reason)"
        }
    }
}
