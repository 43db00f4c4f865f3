import Foundation
import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle
import Synchronization
import Systemd
import UnixSignals

/// Tells systemd how the gateway is doing, and takes its signals.
///
/// - `READY=1` once the socket accepts connections; `STATUS=` then and every few seconds.
/// - Watchdog: with `WATCHDOG_USEC`, pings at half the interval, but only while a health
///   probe passes: a task posted to every event loop and one to the concurrency pool finish
///   within a quarter of the interval. A wedged daemon stops pinging and systemd restarts
///   it. Upstream outages do not stop the pings (a restart cannot fix them).
/// - SIGHUP reloads the configuration.
///
/// Put it before the ``Gateway`` in the service group: groups stop in reverse order, so the
/// watchdog keeps pinging while the gateway drains. Without `NOTIFY_SOCKET` only the
/// signals matter.
public struct SystemdIntegration: Service {
    let gateway: Gateway
    /// How often STATUS= is refreshed.
    let statusInterval: Duration
    /// Enables SIGUSR2 as a switch that wedges the event loops, for watchdog tests only.
    let testHooks: Bool

    public init(gateway: Gateway, statusInterval: Duration = .seconds(2), environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.gateway = gateway
        self.statusInterval = statusInterval
        self.testHooks = environment["CHATRELAYD_TEST_HOOKS"] == "1"
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: self.testHooks ? [.sighup, .sigusr2] : [.sighup])
        guard await self.gateway.waitUntilReady() != nil else {
            // The gateway failed to start and is reporting why; ending now would race it and
            // make the service group report this service instead. Wait to be shut down.
            try? await gracefulShutdown()
            return
        }
        self.gateway.notify { _ = try $0.ready() }
        self.gateway.notify { _ = try $0.status(self.gateway.statusLine()) }
        let watchdog: WatchdogSettings?
        do {
            watchdog = try WatchdogSettings.fromEnvironment()
        } catch {
            self.gateway.logger.error("cannot read the watchdog settings: \(error)")
            watchdog = nil
        }
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await signal in signals {
                    if signal == .sighup {
                        self.gateway.reload()
                    } else if signal == .sigusr2 {
                        self.stallEventLoops()
                    }
                }
            }
            group.addTask {
                while (try? await Task.sleep(for: self.statusInterval)) != nil {
                    self.gateway.notify { _ = try $0.status(self.gateway.statusLine()) }
                }
            }
            if let watchdog {
                group.addTask { await self.feedWatchdog(watchdog) }
            }
            // The group shuts this service down after the gateway has stopped.
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    private func feedWatchdog(_ watchdog: WatchdogSettings) async {
        var withheld = false
        while (try? await Task.sleep(for: watchdog.pingInterval)) != nil {
            if await HealthProbe.passes(eventLoops: self.gateway.eventLoops, within: watchdog.interval / 4) {
                self.gateway.notify { _ = try $0.watchdogPing() }
                if withheld { self.gateway.logger.notice("health probe passes again; watchdog pings resumed") }
                withheld = false
            } else if !withheld {
                withheld = true
                self.gateway.logger.error("health probe failed: event loops or the task pool are stalled; withholding watchdog pings")
            }
        }
    }

    private func stallEventLoops() {
        self.gateway.logger.warning("test hook: stalling every event loop (SIGUSR2 with CHATRELAYD_TEST_HOOKS=1)")
        for loop in self.gateway.eventLoops.makeIterator() {
            loop.execute { while true { sleep(3600) } }  // signals (the backtracer's) cut a single sleep short
        }
    }
}

/// Checks that the daemon can still do work: every event loop and the concurrency pool
/// each run a trivial task within the time allowed.
enum HealthProbe {
    static func passes(eventLoops: MultiThreadedEventLoopGroup, within timeout: Duration) async -> Bool {
        let loops = Array(eventLoops.makeIterator())
        let probe = Probe(pending: loops.count + 1)
        return await withCheckedContinuation { continuation in
            probe.start(continuation)
            for loop in loops {
                loop.execute { probe.arrived() }
            }
            Task.detached { probe.arrived() }
            Task.detached {
                try? await Task.sleep(for: timeout)
                probe.finish(false)
            }
        }
    }

    private final class Probe: Sendable {
        private let state: Mutex<(pending: Int, continuation: CheckedContinuation<Bool, Never>?)>

        init(pending: Int) { self.state = Mutex((pending, nil)) }

        func start(_ continuation: CheckedContinuation<Bool, Never>) { self.state.withLock { $0.continuation = continuation } }

        func arrived() {
            let done = self.state.withLock { state -> CheckedContinuation<Bool, Never>? in
                state.pending -= 1
                return state.pending == 0 ? state.continuation.take() : nil
            }
            done?.resume(returning: true)
        }

        func finish(_ result: Bool) {
            self.state.withLock { $0.continuation.take() }?.resume(returning: result)
        }
    }
}
