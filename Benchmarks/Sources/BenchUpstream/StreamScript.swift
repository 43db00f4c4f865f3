/// What a streaming request asks the upstream for, read from its `model` name so that a
/// relay passes it through unchanged.
///
/// `bench-` followed by dash-separated parts, each a letter and a number:
/// - `cN`: N content chunks (default 50)
/// - `eN`: N empty `delta:{}` chunks before each content chunk (a flood; default 0)
/// - `dN`: N milliseconds between content chunks (default 0: as fast as the socket takes them)
/// - `bN`: flush the socket every N events (default 1: one write per event, as a real
///   upstream that produces tokens one at a time)
/// - `sN`: answer HTTP status N (400 to 599) with an OpenAI-style error instead, as a
///   provider that fails (`bench-s500`) or rate-limits (`bench-s429`); for the soak's errors
/// - `vN`: ignored, so that `bench-v1` names the defaults
///
/// `bench-c50`, `bench-c50-e20`, `bench-c60-d1000`, `bench-s500`.
struct StreamScript: Hashable, Sendable {
    var contentChunks = 50
    var emptyChunksBeforeContent = 0
    var millisecondsBetweenContent = 0
    var eventsPerFlush = 1
    /// Set by `sN`: the request fails with this status.
    var errorStatus: Int?

    static let modelPrefix = "bench-"

    /// Nil when the name is not one of ours; the upstream answers 404 then, as a real one would.
    init?(model: String) {
        guard model.hasPrefix(Self.modelPrefix) else { return nil }
        for part in model.dropFirst(Self.modelPrefix.count).split(separator: "-") {
            guard let letter = part.first, let value = Int(part.dropFirst()), value >= 0 else { return nil }
            switch letter {
            case "c": self.contentChunks = value
            case "e": self.emptyChunksBeforeContent = value
            case "d": self.millisecondsBetweenContent = value
            case "b" where value >= 1: self.eventsPerFlush = value
            case "s" where (400...599).contains(value): self.errorStatus = value
            case "v": continue
            default: return nil
            }
        }
    }
}
