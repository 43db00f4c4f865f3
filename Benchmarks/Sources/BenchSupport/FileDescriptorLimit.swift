#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`).
///
/// Ten thousand streams need ten thousand sockets in the load generator and in the upstream,
/// and the usual soft limit is 1024; an unprivileged process may raise it up to the hard limit.
public enum FileDescriptorLimit {
    /// Raises the soft limit to the hard limit and returns the new soft limit.
    @discardableResult
    public static func raiseToHardLimit() -> UInt64 {
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
            _ = getrlimit(resource, &limit)
        }
        return UInt64(limit.rlim_cur)
    }
}
