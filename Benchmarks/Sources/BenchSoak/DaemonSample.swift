import Foundation

/// The relay's resident memory, open descriptors and threads at one moment, from /proc,
/// with how far the soak had got.
///
/// These three grow when something leaks: buffers or whole exchanges (RSS), sockets or files
/// never closed (descriptors), threads started per request (threads).
struct DaemonSample: Codable, Sendable {
    var label: String
    var requestsDone: Int
    var contentChunks: Int
    var secondsSinceStart: Double
    var residentKilobytes: Int
    var openDescriptors: Int
    var threads: Int

    var residentMegabytes: Double { Double(self.residentKilobytes) / 1024 }

    /// Nil when the process is gone or /proc cannot be read.
    static func read(
        pid: Int32, label: String, requestsDone: Int, contentChunks: Int, secondsSinceStart: Double
    ) -> DaemonSample? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let resident = self.field("VmRSS", in: status),
            let threads = self.field("Threads", in: status),
            let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        else { return nil }
        return DaemonSample(
            label: label, requestsDone: requestsDone, contentChunks: contentChunks, secondsSinceStart: secondsSinceStart,
            residentKilobytes: resident, openDescriptors: descriptors.count, threads: threads
        )
    }

    /// The number after `name:` in /proc/PID/status (`VmRSS:   35120 kB`, `Threads:  9`).
    private static func field(_ name: String, in status: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.dropFirst(name.count + 1).split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) }
        }
        return nil
    }
}
