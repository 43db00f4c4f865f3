#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a line to standard error, which `run` keeps apart from the results on stdout.
public func printToStandardError(_ message: String) {
    writeLine(message, to: 2)
}

/// Writes a line to standard output at once, unbuffered, so that a script waiting for it
/// (the upstream's port) sees it even when stdout is a file.
public func printToStandardOutputNow(_ message: String) {
    writeLine(message, to: 1)
}

private func writeLine(_ message: String, to descriptor: Int32) {
    let line = message + "\n"
    _ = line.utf8CString.withUnsafeBufferPointer { pointer in
        write(descriptor, pointer.baseAddress, pointer.count - 1)
    }
}
