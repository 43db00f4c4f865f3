import Logging

extension Logger.Metadata {
    /// An entry's metadata as `StreamLogHandler` merges it, for both of our handlers: the
    /// handler's own, then the provider's, then the call's, later ones winning; an attached
    /// error adds `error.message` and `error.type`. `body` gets each key once, in key order.
    ///
    /// Sorted rather than merged into a dictionary: the request log line carries about
    /// twenty keys, and hashing each into a new dictionary, then sorting anyway, was half of
    /// what writing the line cost. Keys and values are kept apart, only positions are
    /// sorted, and the entries are handed to `body` rather than returned as (key, value)
    /// pairs: moving, reading or returning pairs copied each through the runtime's generic
    /// tuple witnesses (two thirds of the line's cost in callgrind, then a hundred calls a
    /// line for the returned array).
    static func forEachMerged(
        _ own: Logger.Metadata,
        provider: Logger.MetadataProvider?,
        event: LogEvent,
        _ body: (String, Logger.MetadataValue) -> Void
    ) {
        // In order of precedence: a later entry with the same key wins.
        let capacity = own.count + (event.metadata?.count ?? 0) + 2
        var keys: [String] = []
        var values: [Logger.MetadataValue] = []
        keys.reserveCapacity(capacity)
        values.reserveCapacity(capacity)
        func add(_ key: String, _ value: Logger.MetadataValue) {
            keys.append(key)
            values.append(value)
        }
        for (key, value) in own { add(key, value) }
        if let provided = provider?.get() {
            for (key, value) in provided { add(key, value) }
        }
        if let explicit = event.metadata {
            for (key, value) in explicit { add(key, value) }
        }
        if let error = event.error {
            add("error.message", "\(error)")
            add("error.type", "\(String(reflecting: type(of: error)))")
        }
        // Positions sorted by key, then by position. ASCII keys that differ in their first
        // eight bytes are ordered by those bytes as a number (the same order as the strings');
        // comparing twenty-odd keys as strings, over a hundred times a line, was a fifth of
        // what writing the line cost.
        var order = keys.indices.map { (prefix: Self.sortPrefix(keys[$0]), index: $0) }
        order.sort { a, b in
            if let x = a.prefix, let y = b.prefix, x != y { return x < y }
            if keys[a.index] != keys[b.index] { return keys[a.index] < keys[b.index] }
            return a.index < b.index
        }
        for (position, entry) in order.enumerated() where position == order.count - 1 || keys[order[position + 1].index] != keys[entry.index] {
            body(keys[entry.index], values[entry.index])
        }
    }

    /// The first eight bytes of an ASCII `key`, big-endian, zero-padded: numbers that order
    /// as the keys do wherever they differ in those bytes. Nil for a key with any other
    /// character, which String compares after normalising (a combining mark can change
    /// how an earlier letter sorts).
    static func sortPrefix(_ key: String) -> UInt64? {
        var key = key
        return key.withUTF8 { bytes -> UInt64? in
            guard bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
            var prefix: UInt64 = 0
            for position in 0..<8 {
                prefix <<= 8
                if position < bytes.count { prefix |= UInt64(bytes[position]) }
            }
            return prefix
        }
    }
}
