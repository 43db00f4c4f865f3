public import Logging
import Synchronization

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
/// logs once at its end, so that rendering was 5 to 11% of a one-chunk request's CPU in
/// perf. This handler renders metadata only when it writes a line; metadata is merged the
/// same way (``Logger/Metadata/merged(_:provider:event:)``).
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
        // Built as bytes: an append to a `String` cost about 300 instructions and the
        // request log line makes a hundred (callgrind: formatting the line took 56,000
        // instructions, 35,000 now).
        var line: [UInt8] = []
        line.reserveCapacity(256 + (self.metadata.count + (event.metadata?.count ?? 0)) * 40)
        Self.append(Self.timestamp(), to: &line)
        line.append(UInt8(ascii: " "))
        Self.append(event.level.rawValue, to: &line)
        if !self.label.isEmpty {
            line.append(UInt8(ascii: " "))
            Self.append(self.label, to: &line)
        }
        line.append(UInt8(ascii: ":"))
        let merged = Logger.Metadata.merged(self.metadata, provider: self.metadataProvider, event: event)
        for index in merged.order {
            // Separators as bytes: an append of a one-character string cost as much as a key's.
            line.append(UInt8(ascii: " "))
            Self.append(merged.keys[index], to: &line)
            line.append(UInt8(ascii: "="))
            // A string as it is: `description` copied it out through a switch first.
            if case .string(let text) = merged.values[index] {
                Self.append(text, to: &line)
            } else {
                Self.append(merged.values[index].description, to: &line)
            }
        }
        Self.append(" [", to: &line)
        Self.append(event.source, to: &line)
        Self.append("] ", to: &line)
        Self.append(event.message.description, to: &line)
        line.append(UInt8(ascii: "\n"))
        Self.emit(line, to: self.fileDescriptor)
    }

    /// `text`'s bytes at the end of `line`, copied whole (appending its `utf8` view went
    /// through the generic sequence path: about 170 instructions for a short key).
    @inline(__always)
    static func append(_ text: String, to line: inout [UInt8]) {
        var text = text
        text.withUTF8 { line.append(contentsOf: $0) }
    }

    /// Local time as `StreamLogHandler` writes it (`%Y-%m-%dT%H:%M:%S%z`), made once a
    /// second: `localtime_r` and `strftime` cost about 1,700 instructions a line, and a busy
    /// daemon writes hundreds of lines a second.
    static func timestamp() -> String {
        var now = time(nil)
        if let made = Self.lastTimestamp.withLock({ $0.second == now ? $0.text : nil }) { return made }
        var parts = tm()
        guard localtime_r(&now, &parts) != nil else { return "<unknown>" }
        let text = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer in
            let count = strftime(buffer.baseAddress!, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return String(decoding: UnsafeRawBufferPointer(start: buffer.baseAddress, count: count), as: UTF8.self)
        }
        Self.lastTimestamp.withLock { $0 = (now, text) }
        return text
    }

    /// The second ``timestamp()`` last made its text for, and the text.
    private static let lastTimestamp = Mutex<(second: time_t, text: String)>((-1, ""))

    /// One `write(2)` per line where the kernel takes it whole, so lines from several
    /// threads do not interleave.
    static func emit(_ line: String, to fileDescriptor: Int32 = STDERR_FILENO) {
        Self.emit(Array(line.utf8), to: fileDescriptor)
    }

    static func emit(_ line: [UInt8], to fileDescriptor: Int32) {
        line.withUnsafeBufferPointer { bytes in
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
