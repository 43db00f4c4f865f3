#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The process's open-descriptor limit, and how many client connections it leaves room for.
///
/// Every relayed stream holds two descriptors: the client's connection and its upstream
/// connection. A process that runs out does not just refuse connections: libdispatch's
/// worker-pool monitor opens `/proc` files and traps when it cannot, so the daemon dies
/// with SIGILL. That happened in the benchmark, 10,000 slow streams under a hard limit of
/// 20,000. So at start the gateway raises its soft limit to the hard one (systemd's
/// advice for programs that need many descriptors: its default soft limit is 1024), and
/// admits no more client connections than leave room for theirs upstream and a reserve.
enum DescriptorLimit {
    /// Descriptors kept for everything else: listeners, journald, the config file,
    /// `/proc` reads, moderation hooks' pipes, connections over the limit being refused.
    static let reserve = 256

    /// Raises the soft `RLIMIT_NOFILE` to the hard limit where it is lower, and returns
    /// the soft limit in force afterwards (nil if it cannot be read, or is unlimited).
    static func raiseSoftLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        guard limit.rlim_cur < rlim_t(Int.max) else { return nil }  // RLIM_INFINITY is all ones
        return Int(limit.rlim_cur)
    }

    /// The client connections a descriptor limit of `limit` leaves room for: two
    /// descriptors per stream, after the reserve.
    static func clientConnections(allowedBy limit: Int) -> Int {
        max(1, (limit - self.reserve) / 2)
    }
}
