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
        var order = Array(keys.indices)
        order.sort { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }
        for (position, index) in order.enumerated() where position == order.count - 1 || keys[order[position + 1]] != keys[index] {
            body(keys[index], values[index])
        }
    }
}
