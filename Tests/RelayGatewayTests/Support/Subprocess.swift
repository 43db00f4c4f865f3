import Foundation
import Synchronization

/// What a finished child process left behind.
struct ProcessResult: Sendable {
    var status: Int32
    var standardOutput: String
    var standardError: String
}

/// Runs a program to completion without blocking Swift's cooperative threads.
///
/// Output goes through temporary files, not pipes: tests start processes in parallel, and
/// a pipe's write end inherited by an unrelated long-lived child (the daemon of another
/// test) would keep the reader waiting for an end of file that never comes.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, input: Data? = nil) async throws -> ProcessResult {
    try await onOwnThread {
        let directory = try TestPaths.temporaryDirectory("process")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outputPath = directory + "/stdout"
        let errorPath = directory + "/stderr"
        let inputPath = directory + "/stdin"
        for path in [outputPath, errorPath] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        _ = FileManager.default.createFile(atPath: inputPath, contents: input ?? Data())
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        let error = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        let stdin = try FileHandle(forReadingFrom: URL(fileURLWithPath: inputPath))
        process.standardOutput = output
        process.standardError = error
        process.standardInput = stdin
        try process.run()
        process.waitUntilExit()
        try? output.close()
        try? error.close()
        try? stdin.close()
        return ProcessResult(
            status: process.terminationStatus,
            standardOutput: (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "",
            standardError: (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        )
    }
}

/// Runs blocking work on a thread of its own and awaits its result.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do {
                continuation.resume(returning: try body())
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.start()
    }
}

/// Cancels a test server's task and waits for it, but not for ever: a connection handler
/// stuck writing to a peer that has gone (seen under load, with the cooperative pool idle)
/// keeps HummingbirdCore's task group open, and one such server must not hang the suite.
func stopServer(_ runner: Task<Void, any Error>, patience: Duration = .seconds(10)) async {
    runner.cancel()
    _ = await withDeadline(patience) { _ = await runner.result }
}

/// Runs `work` in a task of its own and waits until it ends or `patience` has passed,
/// whichever comes first: true if it ended. Work past its deadline goes on unawaited.
func withDeadline(_ patience: Duration, _ work: @escaping @Sendable () async -> Void) async -> Bool {
    let outcome = Mutex<Bool?>(nil)
    return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
        let finish: @Sendable (Bool) -> Void = { ended in
            if outcome.withLock({ value in defer { value = value ?? ended }; return value == nil }) { continuation.resume(returning: ended) }
        }
        Task {
            await work()
            finish(true)
        }
        Task {
            try? await Task.sleep(for: patience)
            finish(false)
        }
    }
}

/// Every thread's stack of a running process, from gdb when the machine has it: what a
/// test that found the daemon hung shows, so that the hang can be understood from the log.
func threadStacks(of pid: Int32) async -> String {
    let gdb = "/usr/bin/gdb"
    guard FileManager.default.isExecutableFile(atPath: gdb) else { return "(no gdb on this machine)" }
    let result = try? await runProcess(gdb, ["-p", String(pid), "-batch", "-ex", "thread apply all bt"])
    return result.map { $0.standardOutput + $0.standardError } ?? "(gdb failed to run)"
}
