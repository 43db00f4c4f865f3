import Logging
public import ServiceLifecycle
import Systemd

/// Tells systemd how the gateway is doing: `READY=1` once the socket accepts connections,
/// `STATUS=` with what it serves, `STOPPING=1` when shutdown begins.
///
/// Runs beside the ``Gateway`` in the service group; does nothing without `NOTIFY_SOCKET`.
public struct SystemdIntegration: Service {
    let gateway: Gateway
    let notifier = SystemdNotifier()

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func run() async throws {
        guard let socket = await self.gateway.waitUntilReady() else { return }
        self.notify { _ = try $0.ready() }
        self.notify { _ = try $0.status("serving on \(socket)") }
        // Stay until shutdown: a service that returns would end the group.
        try? await gracefulShutdown()
        self.notify { _ = try $0.stopping() }
    }

    private func notify(_ body: (SystemdNotifier) throws -> Void) {
        do {
            try body(self.notifier)
        } catch {
            self.gateway.logger.warning("sd_notify failed: \(error)")
        }
    }
}
