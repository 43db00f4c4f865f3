import Logging

extension Logger.Metadata {
    /// An entry's metadata as `StreamLogHandler` merges it, for both of our handlers: the
    /// handler's own, then the provider's, then the call's, later ones winning; an attached
    /// error adds `error.message` and `error.type`. Sorted by key.
    ///
    /// Built as one sorted array rather than a merged dictionary: the request log line
    /// carries about twenty keys, and hashing each into a new dictionary, then sorting
    /// anyway, was half of what writing the line cost.
    static func merged(_ own: Logger.Metadata, provider: Logger.MetadataProvider?, event: LogEvent) -> [(key: String, value: Logger.MetadataValue)] {
        var entries: [(key: String, value: Logger.MetadataValue, source: Int)] = []
        entries.reserveCapacity(own.count + (event.metadata?.count ?? 0) + 2)
        for (key, value) in own { entries.append((key, value, 0)) }
        if let provided = provider?.get() {
            for (key, value) in provided { entries.append((key, value, 1)) }
        }
        if let explicit = event.metadata {
            for (key, value) in explicit { entries.append((key, value, 2)) }
        }
        if let error = event.error {
            entries.append(("error.message", "\(error)", 3))
            entries.append(("error.type", "\(String(reflecting: type(of: error)))", 3))
        }
        entries.sort { $0.key != $1.key ? $0.key < $1.key : $0.source < $1.source }
        var merged: [(key: String, value: Logger.MetadataValue)] = []
        merged.reserveCapacity(entries.count)
        for index in entries.indices where index == entries.count - 1 || entries[index + 1].key != entries[index].key {
            merged.append((entries[index].key, entries[index].value))
        }
        return merged
    }
}
