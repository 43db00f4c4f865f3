/// Turns a swift-log metadata key into a name journald accepts.
///
/// journald keeps a field only if its name is 1 to 64 characters of `A-Z`, `0-9` and `_` and
/// does not start with `_` (reserved for fields journald itself adds) or a digit; anything
/// else is dropped without a word. The rule, applied in order:
/// 1. `a-z` become `A-Z`; `-`, `.` and space become `_`; `A-Z`, `0-9`, `_` stay; every other
///    character is dropped.
/// 2. A name left empty is dropped (the metadata entry is not sent).
/// 3. A name starting with a digit or `_` gets the prefix `F_` (`9lives` → `F_9LIVES`,
///    `_hidden` → `F__HIDDEN`).
/// 4. The name is cut to 64 characters.
///
/// So `request-id` becomes `REQUEST_ID`, `http.status` becomes `HTTP_STATUS` and
/// `message_id` becomes `MESSAGE_ID`.
enum JournalFieldName {
    static let maximumLength = 64

    static func sanitized(_ key: String) -> String? {
        var name: [UInt8] = []
        name.reserveCapacity(min(key.utf8.count, maximumLength) + 2)
        for byte in key.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                name.append(byte - 32)
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
                name.append(byte)
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: " "):
                name.append(UInt8(ascii: "_"))
            default:
                continue
            }
        }
        guard let first = name.first else { return nil }
        if first == UInt8(ascii: "_") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) {
            name.insert(contentsOf: "F_".utf8, at: 0)
        }
        return String(decoding: name.prefix(maximumLength), as: UTF8.self)
    }
}
