import Foundation

/// What a finished child process printed and how it exited.
struct ChildProcessOutput {
    let status: Int32
    let standardOutput: String
    let standardError: String
}

/// Runs a program to completion with its output captured. Callers bound the run time with
/// `timeout(1)` in the arguments, so a hung child cannot hang the test run.
func runChildProcess(_ executable: String, _ arguments: [String]) throws -> ChildProcessOutput {
    let running = try ChildProcess(executable, arguments)
    return running.finish()
}

/// A started child whose stdout and stderr are pipes, for tests that talk to it while it runs.
final class ChildProcess {
    private let process = Process()
    private let output = Pipe()
    private let errors = Pipe()

    init(_ executable: String, _ arguments: [String]) throws {
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = arguments
        self.process.standardInput = FileHandle.nullDevice
        self.process.standardOutput = self.output
        self.process.standardError = self.errors
        try self.process.run()
    }

    /// Reads stderr until `marker` shows up (true) or stderr closes (false). Returns what was read.
    func waitForStandardError(containing marker: String) -> (found: Bool, text: String) {
        var text = ""
        while true {
            let chunk = self.errors.fileHandleForReading.availableData
            if chunk.isEmpty { return (false, text) }
            text += String(decoding: chunk, as: UTF8.self)
            if text.contains(marker) { return (true, text) }
        }
    }

    /// Reads both pipes to the end and waits for the exit status.
    func finish() -> ChildProcessOutput {
        let standardOutput = self.output.fileHandleForReading.readDataToEndOfFile()
        let standardError = self.errors.fileHandleForReading.readDataToEndOfFile()
        self.process.waitUntilExit()
        return ChildProcessOutput(
            status: self.process.terminationStatus,
            standardOutput: String(decoding: standardOutput, as: UTF8.self),
            standardError: String(decoding: standardError, as: UTF8.self)
        )
    }
}

/// The `systemd-probe` test helper, built next to the test bundle because the test target
/// depends on it: the build products directory is the directory of the running test binary.
enum ProbeExecutable {
    static var path: String? {
        guard let testBinary = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            return nil
        }
        let candidate = URL(fileURLWithPath: testBinary).deletingLastPathComponent()
            .appendingPathComponent("systemd-probe").path
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }
}

/// True when the file exists and is executable, for `.enabled(if:)` conditions.
func isExecutable(_ path: String) -> Bool {
    FileManager.default.isExecutableFile(atPath: path)
}
