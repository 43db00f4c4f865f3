/// RFC 9110's character classes for header fields: one definition for what the relay
/// writes (``HTTP1RequestHead``) and what it reads (``HTTP1ResponseParser``).
enum HTTP1Grammar {
    /// `tchar`: letters, digits and ``!#$%&'*+-.^_`|~``, what a header name is made of.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// What a field value may hold: visible characters (obs-text included), spaces and
    /// tabs; no line breaks or other control characters.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte >= 0x20 && byte != 0x7F || byte == UInt8(ascii: "\t")
    }
}
