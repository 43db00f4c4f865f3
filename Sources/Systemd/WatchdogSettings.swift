internal import CSystemd

/// The watchdog interval systemd expects this process to honour (`WatchdogSec=` in the unit),
/// read from `WATCHDOG_USEC`/`WATCHDOG_PID` with `sd_watchdog_enabled(3)`.
///
/// A daemon pings (`SystemdNotifier.watchdogPing()`) every `pingInterval`, half the interval,
/// as `sd_watchdog_enabled(3)` recommends, so one late ping does not get it killed.
public struct WatchdogSettings: Sendable, Hashable {
    /// How long systemd waits for a ping before it considers the service hung.
    public let interval: Duration

    /// How often to ping: half of `interval`.
    public var pingInterval: Duration {
        self.interval / 2
    }

    public init(interval: Duration) {
        self.interval = interval
    }

    /// The settings systemd passed to this process, or `nil` when the watchdog is off or the
    /// variables are meant for another process (`WATCHDOG_PID` names a different pid).
    /// The environment is left in place.
    ///
    /// - Throws: `SystemdError.watchdogUnreadable` when the variables are malformed.
    public static func fromEnvironment() throws -> WatchdogSettings? {
        var microseconds: UInt64 = 0
        let result = sd_watchdog_enabled(0, &microseconds)
        if result < 0 {
            throw SystemdError.watchdogUnreadable(errno: -result)
        }
        guard result > 0, microseconds > 0 else { return nil }
        return WatchdogSettings(interval: .microseconds(microseconds))
    }
}
