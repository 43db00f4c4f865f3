import Logging

/// An entry's metadata merged (``Logger/Metadata/merged(_:provider:event:)``): `keys[i]`
/// and `values[i]` for each `i` in `order`, in key order, each key once.
struct MergedMetadata {
    var keys: [String] = []
    var values: [Logger.MetadataValue] = []
    /// Positions in `keys` and `values`, sorted by key, the one that wins for each key.
    var order: [Int] = []

    mutating func add(_ key: String, _ value: Logger.MetadataValue) {
        self.keys.append(key)
        self.values.append(value)
    }
}

extension Logger.Metadata {
    /// An entry's metadata as `StreamLogHandler` merges it, for both of our handlers: the
    /// handler's own, then the provider's, then the call's, later ones winning; an attached
    /// error adds `error.message` and `error.type`. Each key once, in key order.
    ///
    /// Sorted rather than merged into a dictionary: the request log line carries about
    /// twenty keys, and hashing each into a new dictionary, then sorting anyway, was half of
    /// what writing the line cost. Keys and values are kept apart and only positions are
    /// sorted: moving, reading or returning (key, value) pairs copied each through the
    /// runtime's generic tuple witnesses (two thirds of the line's cost in callgrind). The
    /// handlers walk `order` in a plain loop: a closure per entry, capturing the line being
    /// written, cost two dynamic exclusivity checks for every append to it.
    static func merged(
        _ own: Logger.Metadata,
        provider: Logger.MetadataProvider?,
        event: LogEvent
    ) -> MergedMetadata {
        // In order of precedence: a later entry with the same key wins.
        let capacity = own.count + (event.metadata?.count ?? 0) + 2
        var merged = MergedMetadata()
        merged.keys.reserveCapacity(capacity)
        merged.values.reserveCapacity(capacity)
        for (key, value) in own { merged.add(key, value) }
        if let provided = provider?.get() {
            for (key, value) in provided { merged.add(key, value) }
        }
        if let explicit = event.metadata {
            for (key, value) in explicit { merged.add(key, value) }
        }
        if let error = event.error {
            merged.add("error.message", "\(error)")
            merged.add("error.type", "\(String(reflecting: type(of: error)))")
        }
        // Positions sorted by key, then by position. ASCII keys that differ in their first
        // eight bytes are ordered by those bytes as a number (the same order as the strings');
        // comparing twenty-odd keys as strings, over a hundred times a line, was a fifth of
        // what writing the line cost.
        let keys = merged.keys
        var sorted = keys.indices.map { (prefix: Self.sortPrefix(keys[$0]), index: $0) }
        sorted.sort { a, b in
            if let x = a.prefix, let y = b.prefix, x != y { return x < y }
            if keys[a.index] != keys[b.index] { return keys[a.index] < keys[b.index] }
            return a.index < b.index
        }
        merged.order.reserveCapacity(sorted.count)
        for (position, entry) in sorted.enumerated() where position == sorted.count - 1 || keys[sorted[position + 1].index] != keys[entry.index] {
            merged.order.append(entry.index)
        }
        return merged
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
