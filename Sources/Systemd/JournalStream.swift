#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Finds out whether stderr is connected to the journal. systemd sets `JOURNAL_STREAM` to
/// `DEVICE:INODE` of the stream it gives a service; comparing it with stderr's own `fstat`
/// tells a service it can log natively, and tells it apart from a child whose stderr was
/// redirected elsewhere but which inherited the variable.
public enum JournalStream {
    /// True when `JOURNAL_STREAM` names stderr's device and inode.
    public static func stderrIsJournal() -> Bool {
        guard let value = ProcessEnvironment.value("JOURNAL_STREAM"),
            let expected = Self.parse(value)
        else { return false }
        var status = stat()
        guard fstat(STDERR_FILENO, &status) == 0 else { return false }
        return UInt64(status.st_dev) == expected.device && UInt64(status.st_ino) == expected.inode
    }

    static func parse(_ value: String) -> (device: UInt64, inode: UInt64)? {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return nil }
        return (device, inode)
    }
}
