import Testing

@testable import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ProcessEnvironmentTests {
    @Suite("WatchdogSettings")
    struct WatchdogSettingsTests {
        @Test func enabledForThisProcess() throws {
            let environment = EnvironmentOverride(["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": String(getpid())])
            defer { environment.restore() }
            let settings = try #require(try WatchdogSettings.fromEnvironment())
            #expect(settings.interval == .seconds(3))
            #expect(settings.pingInterval == .milliseconds(1500))
        }

        @Test func enabledWhenNoPidIsNamed() throws {
            let environment = EnvironmentOverride(["WATCHDOG_USEC": "20000000", "WATCHDOG_PID": nil])
            defer { environment.restore() }
            #expect(try WatchdogSettings.fromEnvironment() == WatchdogSettings(interval: .seconds(20)))
        }

        @Test func disabledWhenMeantForAnotherProcess() throws {
            let otherPid = getpid() == 1 ? 2 : 1
            let environment = EnvironmentOverride(["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": String(otherPid)])
            defer { environment.restore() }
            #expect(try WatchdogSettings.fromEnvironment() == nil)
        }

        @Test func disabledWhenNotConfigured() throws {
            let environment = EnvironmentOverride(["WATCHDOG_USEC": nil, "WATCHDOG_PID": nil])
            defer { environment.restore() }
            #expect(try WatchdogSettings.fromEnvironment() == nil)
        }

        @Test func malformedIntervalIsAnError() throws {
            let environment = EnvironmentOverride(["WATCHDOG_USEC": "soon", "WATCHDOG_PID": String(getpid())])
            defer { environment.restore() }
            #expect(throws: SystemdError.watchdogUnreadable) {
                try WatchdogSettings.fromEnvironment()
            }
        }
    }
}
