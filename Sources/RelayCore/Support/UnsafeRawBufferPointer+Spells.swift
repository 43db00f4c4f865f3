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

extension UnsafeBufferPointer<UInt8> {
    /// Whether these bytes are `other`'s: lengths first, then `memcmp` (what a generic
    /// `elementsEqual` does a byte at a time).
    @inline(__always)
    func hasSameBytes(as other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard self.count == other.count else { return false }
        guard self.count > 0, let base = self.baseAddress, let otherBase = other.baseAddress else { return true }
        return memcmp(base, otherBase, self.count) == 0
    }
}
