import Foundation

/// CPU time and memory of other processes (the relay, the upstream), read from /proc.
///
/// CPU is `utime + stime` of `/proc/PID/stat` (the system part, `stime`, kept apart too),
/// which covers every thread of the process; memory is `VmRSS` and the peak `VmHWM` of
/// `/proc/PID/status`. Several pids are summed, for a relay made of several processes such
/// as nginx's master and workers.
struct ProcessSample: Sendable {
    var cpuSeconds: Double
    /// Of `cpuSeconds`, the time spent in the kernel on the process's behalf.
    var systemCpuSeconds: Double
    var residentBytes: UInt64
    var peakResidentBytes: UInt64
    /// Proportional set size: shared pages divided among the processes that map them. Summed
    /// RSS counts nginx's shared pages once per worker; PSS does not.
    var proportionalBytes: UInt64?

    /// Nil when no pid is given or one of them is gone.
    static func read(pids: [Int32]) -> ProcessSample? {
        guard !pids.isEmpty else { return nil }
        var total = ProcessSample(cpuSeconds: 0, systemCpuSeconds: 0, residentBytes: 0, peakResidentBytes: 0, proportionalBytes: 0)
        for pid in pids {
            guard let cpu = self.cpuSeconds(pid: pid), let memory = self.memory(pid: pid) else { return nil }
            total.cpuSeconds += cpu.user + cpu.system
            total.systemCpuSeconds += cpu.system
            total.residentBytes += memory.resident
            total.peakResidentBytes += memory.peak
            if let pss = self.proportionalBytes(pid: pid), let sum = total.proportionalBytes {
                total.proportionalBytes = sum + pss
            } else {
                total.proportionalBytes = nil
            }
        }
        return total
    }

    /// Starts the peak over at the current RSS (`echo 5 > /proc/PID/clear_refs`), so that each
    /// run reports its own peak rather than the process's lifetime one. False when the kernel
    /// or the permissions refuse.
    static func resetPeak(pids: [Int32]) -> Bool {
        var allReset = true
        for pid in pids {
            do {
                try Data("5".utf8).write(to: URL(fileURLWithPath: "/proc/\(pid)/clear_refs"))
            } catch {
                allReset = false
            }
        }
        return allReset
    }

    private static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    private static func cpuSeconds(pid: Int32) -> (user: Double, system: Double)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let endOfName = stat.lastIndex(of: ")")
        else { return nil }
        // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: endOfName)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user / self.ticksPerSecond, system / self.ticksPerSecond)
    }

    private static func memory(pid: Int32) -> (resident: UInt64, peak: UInt64)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        var resident: UInt64?
        var peak: UInt64?
        for line in status.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { resident = self.kilobytes(line) }
            if line.hasPrefix("VmHWM:") { peak = self.kilobytes(line) }
        }
        guard let resident, let peak else { return nil }
        return (resident * 1024, peak * 1024)
    }

    private static func proportionalBytes(pid: Int32) -> UInt64? {
        guard let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return nil }
        return rollup.split(separator: "\n").first { $0.hasPrefix("Pss:") }.flatMap(self.kilobytes).map { $0 * 1024 }
    }

    private static func kilobytes(_ line: Substring) -> UInt64? {
        line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
    }
}

/// This process's own CPU time, to show how much of the machine the load generator took.
enum OwnCPU {
    static func seconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1_000_000 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
