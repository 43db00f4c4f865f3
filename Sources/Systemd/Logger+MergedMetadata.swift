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
        merged.order = Self.keyOrder(merged.keys)
        return merged
    }

    /// The positions of `keys` sorted by key, each key once: of equal keys, the last.
    ///
    /// ASCII keys (all but the rarest) are ordered by their first sixteen bytes as two
    /// numbers and their length, which is the strings' order wherever those differ, and
    /// sorted by insertion: comparing twenty-odd keys as strings in the standard library's
    /// sort was a fifth of what writing the request's line cost, and its generic sort and
    /// the optional prefixes it compared another tenth.
    static func keyOrder(_ keys: [String]) -> [Int] {
        var sortKeys: [SortKey] = []
        sortKeys.reserveCapacity(keys.count)
        for key in keys {
            guard let sortKey = SortKey(key) else { return Self.keyOrderComparingStrings(keys) }
            sortKeys.append(sortKey)
        }
        // Sorted by key, then by position (insertion keeps equal keys in their order), in
        // buffers: through the arrays, every step checked bounds and uniqueness and retained
        // them (17,000 instructions for a request's line).
        var sorted = Array(keys.indices)
        return sortKeys.withUnsafeBufferPointer { sortKeys in
            sorted.withUnsafeMutableBufferPointer { sorted in
                for next in sorted.indices.dropFirst() {
                    let position = sorted[next]
                    let key = sortKeys[position]
                    var slot = next
                    while slot > 0 {
                        let before = sorted[slot - 1]
                        guard key.precedes(sortKeys[before]) ?? (keys[position] < keys[before]) else { break }
                        sorted[slot] = sorted[slot - 1]
                        slot -= 1
                    }
                    sorted[slot] = position
                }
                var order: [Int] = []
                order.reserveCapacity(sorted.count)
                for index in sorted.indices {
                    let position = sorted[index]
                    if index + 1 < sorted.count {
                        let next = sorted[index + 1]
                        if sortKeys[position].equals(sortKeys[next]) ?? (keys[position] == keys[next]) { continue }
                    }
                    order.append(position)
                }
                return order
            }
        }
    }

    /// ``keyOrder(_:)`` for keys with other characters, which String compares after
    /// normalising (a combining mark can change how an earlier letter sorts, and two
    /// spellings can be one key).
    private static func keyOrderComparingStrings(_ keys: [String]) -> [Int] {
        let sorted = keys.indices.sorted { a, b in keys[a] != keys[b] ? keys[a] < keys[b] : a < b }
        var order: [Int] = []
        for (index, position) in sorted.enumerated() where index == sorted.count - 1 || keys[sorted[index + 1]] != keys[position] {
            order.append(position)
        }
        return order
    }
}

/// An ASCII key's first sixteen bytes, big-endian and zero-padded, and its length: ordered
/// as the keys are wherever they differ in those bytes or in length within them.
struct SortKey {
    let high: UInt64
    let low: UInt64
    let length: Int

    /// Whether this key sorts before `other`; nil when both are longer than sixteen bytes
    /// and the same in them (the strings decide).
    @inline(__always)
    func precedes(_ other: SortKey) -> Bool? {
        if self.high != other.high { return self.high < other.high }
        if self.low != other.low { return self.low < other.low }
        if self.length > 16, other.length > 16 { return nil }
        return self.length < other.length
    }

    /// Whether the keys are the same; nil when the strings decide, as in ``precedes(_:)``.
    @inline(__always)
    func equals(_ other: SortKey) -> Bool? {
        guard self.high == other.high, self.low == other.low, self.length == other.length else { return false }
        return self.length <= 16 ? true : nil
    }

    /// Nil for a key with any character beyond ASCII.
    init?(_ key: String) {
        var key = key
        var words: (UInt64, UInt64) = (0, 0)
        let length = key.withUTF8 { bytes -> Int? in
            // The first sixteen bytes as two words at once: byte by byte, a key cost about
            // 270 instructions.
            withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes).prefix(16))) }
            guard (words.0 | words.1) & 0x8080_8080_8080_8080 == 0 else { return nil }
            for byte in bytes.dropFirst(16) where byte >= 0x80 { return nil }
            return bytes.count
        }
        guard let length else { return nil }
        self.high = UInt64(bigEndian: words.0)
        self.low = UInt64(bigEndian: words.1)
        self.length = length
    }
}
