public import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A swift-log `LogHandler` that writes one readable line per entry to stderr, in
/// `StreamLogHandler`'s format: `2026-11-26T05:00:00+0000 info chatrelayd: key=value … [Module] message`.
///
/// `StreamLogHandler` renders its metadata into text each time a key is set. The gateway
/// sets several keys on every request's logger (request id, caller, model, upstream) and
/// logs once at its end, so that rendering was 5 to 11% of a one-chunk request's CPU in perf. This handler
/// renders metadata only when it writes a line; metadata is merged the same way (the
/// handler's own, then the provider's, then the call's, later ones winning).
public struct StandardErrorLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public let label: String
    /// Where lines go: stderr, or a pipe in tests.
    let fileDescriptor: Int32

    public init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.init(label: label, metadataProvider: metadataProvider, fileDescriptor: STDERR_FILENO)
    }

    init(label: String, metadataProvider: Logger.MetadataProvider?, fileDescriptor: Int32) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.fileDescriptor = fileDescriptor
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = Logger.Metadata.merged(self.metadata, provider: self.metadataProvider, event: event)
        var line = Self.timestamp()
        line += " \(event.level)"
        if !self.label.isEmpty { line += " \(self.label)" }
        line += ":"
        for (key, value) in merged {
            line += " \(key)=\(value)"
        }
        line += " [\(event.source)] \(event.message)\n"
        Self.emit(line, to: self.fileDescriptor)
    }

    /// Local time as `StreamLogHandler` writes it (`%Y-%m-%dT%H:%M:%S%z`).
    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        guard localtime_r(&now, &parts) != nil else { return "<unknown>" }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            let count = strftime(buffer.baseAddress!, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress, count: count), as: UTF8.self)
        }
    }

    /// One `write(2)` per line where the kernel takes it whole, so lines from several
    /// threads do not interleave.
    static func emit(_ line: String, to fileDescriptor: Int32 = STDERR_FILENO) {
        var line = line
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(fileDescriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }
}

extension Logger.Metadata {
    /// An entry's metadata as `StreamLogHandler` merges it, for both of our handlers: the
    /// handler's own, then the provider's, then the call's, later ones winning; an attached
    /// error adds `error.message` and `error.type`. Sorted by key.
    ///
    /// Built as one sorted array rather than a merged dictionary: the request log line
    /// carries about twenty keys, and hashing each into a new dictionary, then sorting
    /// anyway, was half of what writing the line cost.
    static func merged(_ own: Logger.Metadata, provider: Logger.MetadataProvider?, event: LogEvent) -> [(key: String, value: Logger.MetadataValue)] {
        var entries: [(key: String, value: Logger.MetadataValue, source: Int)] = []
        entries.reserveCapacity(own.count + (event.metadata?.count ?? 0) + 2)
        for (key, value) in own { entries.append((key, value, 0)) }
        if let provided = provider?.get() {
            for (key, value) in provided { entries.append((key, value, 1)) }
        }
        if let explicit = event.metadata {
            for (key, value) in explicit { entries.append((key, value, 2)) }
        }
        if let error = event.error {
            entries.append(("error.message", "\(error)", 3))
            entries.append(("error.type", "\(String(reflecting: type(of: error)))", 3))
        }
        entries.sort { $0.key != $1.key ? $0.key < $1.key : $0.source < $1.source }
        var merged: [(key: String, value: Logger.MetadataValue)] = []
        merged.reserveCapacity(entries.count)
        for index in entries.indices where index == entries.count - 1 || entries[index + 1].key != entries[index].key {
            merged.append((entries[index].key, entries[index].value))
        }
        return merged
    }
}
