internal import CSystemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One native journal entry under construction: every `NAME=value` field is appended to a
/// single byte buffer, and the iovecs for `sd_journal_sendv(3)` point into it, so building an
/// entry costs two growing arrays rather than one string per field.
///
/// Values go over as raw bytes, so newlines in them survive (the native protocol, unlike
/// syslog, is not line based).
struct JournalEntry {
    private var bytes: [UInt8] = []
    private var fieldEnds: [Int] = []

    init() {
        self.bytes.reserveCapacity(512)
        self.fieldEnds.reserveCapacity(16)
    }

    /// `name` must already be a valid journal field name (see `JournalFieldName`).
    mutating func append(_ name: String, _ value: String) {
        self.bytes.append(contentsOf: name.utf8)
        self.bytes.append(UInt8(ascii: "="))
        self.bytes.append(contentsOf: value.utf8)
        self.fieldEnds.append(self.bytes.count)
    }

    /// The fields as `NAME=value` strings, in the order they were appended.
    var fields: [String] {
        var start = 0
        return self.fieldEnds.map { end in
            defer { start = end }
            return String(decoding: self.bytes[start..<end], as: UTF8.self)
        }
    }

    /// Sends the entry to `/run/systemd/journal/socket`.
    /// - Returns: 0 on success, or a negative errno as `sd_journal_sendv` reports it.
    func send() -> Int32 {
        self.bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return -EINVAL }
            var start = 0
            let vectors = self.fieldEnds.map { end in
                defer { start = end }
                return iovec(iov_base: UnsafeMutableRawPointer(mutating: base + start), iov_len: end - start)
            }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }
}
