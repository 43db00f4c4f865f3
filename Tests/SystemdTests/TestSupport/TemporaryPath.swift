#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A fresh path under /tmp that is short enough for `sockaddr_un` (108 bytes).
func temporarySocketPath(_ tag: String) -> String {
    "/tmp/systemd-tests-\(getpid())-\(tag)-\(UInt32.random(in: 0...UInt32.max)).sock"
}

/// A random hex token that marks one test's journal entry.
func randomToken() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 16)
}
