import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real `chatrelayd serve` child process on a temporary socket, started and awaited the
/// way systemd does it: readiness is the `READY=1` datagram on `NOTIFY_SOCKET`.
final class GatewayProcess: @unchecked Sendable {
    let directory: String
    let socketPath: String
    let logPath: String
    let process: Process
    let notifySocket: DatagramListener

    /// Writes `config` (with `SOCKET` replaced by the socket path) and starts the daemon.
    /// `launcher` runs in front of it (e.g. `systemd-socket-activate ...`); `awaitReady: false`
    /// returns before `READY=1` (socket activation starts the daemon on the first connection).
    static func start(
        config: String,
        tag: String = "e2e",
        environment extra: [String: String] = [:],
        launcher: [String] = [],
        awaitReady: Bool = true
    ) async throws -> GatewayProcess {
        let directory = try TestPaths.temporaryDirectory(tag)
        let socketPath = directory + "/gw.sock"
        let configPath = directory + "/chatrelayd.yaml"
        try config.replacingOccurrences(of: "SOCKET", with: socketPath).write(toFile: configPath, atomically: true, encoding: .utf8)
        let notify = try DatagramListener(path: directory + "/notify.sock")
        let logPath = directory + "/chatrelayd.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let process = Process()
        let command = launcher.map { $0 == "SOCKET" ? socketPath : $0 } + [TestPaths.chatrelayd, "serve", "--config", configPath]
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.path
        environment.removeValue(forKey: "JOURNAL_STREAM")
        environment.merge(extra) { _, new in new }
        process.environment = environment
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let gateway = GatewayProcess(directory: directory, socketPath: socketPath, logPath: logPath, process: process, notify: notify)
        guard awaitReady else { return gateway }
        // A daemon that exits (a bad config, a crash) fails at once. The wait is well inside
        // the suites' one-minute limits: a limit that runs out first cancels the test, and an
        // error thrown after that (with the log and stacks below) is not shown.
        let ready = try await onOwnThread { try notify.waitFor("READY=1", timeout: 30, unless: { !process.isRunning }) }
        guard ready else {
            let state = process.isRunning ? "still running" : "exited with status \(process.terminationStatus)"
            let stacks = process.isRunning ? await threadStacks(of: process.processIdentifier) : "(not running)"
            process.terminate()
            throw GatewayProcessError(
                "chatrelayd did not send READY=1 within 30 s (\(state); notifications received: \(notify.received))\n--- stacks ---\n\(stacks)\n--- log ---\n\(gateway.log)"
            )
        }
        return gateway
    }

    private init(directory: String, socketPath: String, logPath: String, process: Process, notify: DatagramListener) {
        self.directory = directory
        self.socketPath = socketPath
        self.logPath = logPath
        self.process = process
        self.notifySocket = notify
    }

    /// What the daemon has logged so far.
    var log: String { (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "" }

    /// Waits (without sleeping) for a notify datagram line such as `STOPPING=1`.
    func waitForNotification(_ line: String, timeout: Int32 = 30) async throws -> Bool {
        let socket = self.notifySocket
        return try await onOwnThread { try socket.waitFor(line, timeout: timeout) }
    }

    /// Waits until the daemon's log holds `text`; false after `timeout` seconds. The log is
    /// a file the daemon appends to, so this looks at it every 20 ms.
    func waitForLog(_ text: String, timeout: Double = 30) async throws -> Bool {
        let path = self.directory + "/chatrelayd.log"
        return try await onOwnThread {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if let log = try? String(contentsOfFile: path, encoding: .utf8), log.contains(text) { return true }
                usleep(20_000)
            }
            return false
        }
    }

    /// Every notify datagram that arrives within `seconds`.
    func notifications(during seconds: Double) async throws -> [String] {
        let socket = self.notifySocket
        return try await onOwnThread { try socket.collect(for: seconds) }
    }

    func signal(_ number: Int32) { kill(self.process.processIdentifier, number) }

    /// SIGTERM, then waits for the exit status, but not for ever: a daemon still running
    /// after `patience` fails the test with its threads' stacks and its log, then is killed.
    /// The default stays inside the suites' one-minute limits (see ``start``).
    @discardableResult
    func stop(patience: Duration = .seconds(30)) async throws -> Int32 {
        if self.process.isRunning { kill(self.process.processIdentifier, SIGTERM) }
        let process = self.process
        let exited = await withDeadline(patience) {
            try? await onOwnThread { process.waitUntilExit() }
        }
        guard exited else {
            let stacks = await threadStacks(of: process.processIdentifier)
            kill(process.processIdentifier, SIGKILL)
            throw GatewayProcessError("chatrelayd did not exit within \(patience) of SIGTERM\n--- stacks ---\n\(stacks)\n--- log (end) ---\n\(self.log.suffix(8000))")
        }
        return process.terminationStatus
    }

    deinit {
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}

struct GatewayProcessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// An `AF_UNIX` datagram socket standing in for systemd's notify socket.
///
/// A thread of its own reads every datagram as it arrives, the way systemd does: a notify
/// socket nobody reads fills up after a few datagrams and then blocks the sender.
final class DatagramListener: @unchecked Sendable {
    let path: String
    let fd: Int32
    private let condition = NSCondition()
    private var datagrams: [String] = []
    private var closed = false
    /// How many datagrams the `waitFor`/`collect` calls have looked at.
    private var consumed = 0

    init(path: String) throws {
        self.path = path
        self.fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(self.fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw GatewayProcessError("bind \(path): \(String(cString: strerror(errno)))") }
        let fd = self.fd
        Thread { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, 100)
                guard let listener = self else { return }
                if listener.isClosed { return }
                guard ready > 0 else { continue }
                let count = recv(fd, &buffer, buffer.count, 0)
                guard count > 0 else { continue }
                listener.append(String(decoding: buffer[..<count], as: UTF8.self))
            }
        }.start()
    }

    deinit {
        self.condition.withLock { self.closed = true }
        close(self.fd)
        unlink(self.path)
    }

    private var isClosed: Bool { self.condition.withLock { self.closed } }

    private func append(_ datagram: String) {
        self.condition.withLock {
            self.datagrams.append(datagram)
            self.condition.broadcast()
        }
    }

    /// Every datagram received so far.
    var received: [String] { self.condition.withLock { self.datagrams } }

    /// Blocks (use from a thread of its own) for `seconds`, returning the datagrams that
    /// arrived meanwhile.
    func collect(for seconds: Double) throws -> [String] {
        let deadline = Date().addingTimeInterval(seconds)
        return self.condition.withLock {
            let start = self.datagrams.count
            while Date() < deadline { _ = self.condition.wait(until: deadline) }
            self.consumed = self.datagrams.count
            return Array(self.datagrams[start...])
        }
    }

    /// Blocks (use from a thread of its own) until a datagram not looked at before contains
    /// the line `line`; false after `timeout` seconds, or as soon as `unless` (looked at every
    /// 100 ms) is true.
    func waitFor(_ line: String, timeout seconds: Int32, unless givingUp: () -> Bool = { false }) throws -> Bool {
        let deadline = Date().addingTimeInterval(TimeInterval(seconds))
        return self.condition.withLock {
            while true {
                while self.consumed < self.datagrams.count {
                    let datagram = self.datagrams[self.consumed]
                    self.consumed += 1
                    if datagram.split(separator: "\n").contains(where: { $0 == line }) { return true }
                }
                if Date() >= deadline || givingUp() { return false }
                _ = self.condition.wait(until: min(deadline, Date().addingTimeInterval(0.1)))
            }
        }
    }
}
