#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#endif

extension UnsafeRawBufferPointer {
    /// Whether these bytes are `word`'s UTF-8, compared in place with `memcmp`: how the hot
    /// paths (SSE field names, JSON member names, a chunk's `"object"`) recognise a known
    /// word in the bytes in front of them without making a `String`.
    @inline(__always)
    func spells(_ word: StaticString) -> Bool {
        guard self.count == word.utf8CodeUnitCount else { return false }
        guard let base = self.baseAddress else { return true }
        return memcmp(base, word.utf8Start, self.count) == 0
    }
}
