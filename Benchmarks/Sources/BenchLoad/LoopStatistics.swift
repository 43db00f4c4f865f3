/// What the streams of one event loop measured, kept per loop so that recording an event
/// takes no lock.
///
/// Only the loop's own thread touches an instance while the load runs; the totals are read
/// on that loop too (``LoadRun`` submits the read), which is why the unchecked `Sendable`
/// is sound.
final class LoopStatistics: @unchecked Sendable {
    var timeToFirstByte = LatencyHistogram()
    var timeToFirstContent = LatencyHistogram()
    var gapBetweenEvents = LatencyHistogram()
    var dataEvents = 0
    var contentChunks = 0
    var heartbeats = 0
    var responseBytes = 0
    var fewestContentChunks = Int.max
    var mostContentChunks = 0

    /// A copy that may leave the loop.
    func snapshot() -> Snapshot {
        Snapshot(
            timeToFirstByte: self.timeToFirstByte, timeToFirstContent: self.timeToFirstContent,
            gapBetweenEvents: self.gapBetweenEvents, dataEvents: self.dataEvents, contentChunks: self.contentChunks,
            heartbeats: self.heartbeats, responseBytes: self.responseBytes,
            fewestContentChunks: self.fewestContentChunks, mostContentChunks: self.mostContentChunks
        )
    }

    struct Snapshot: Sendable {
        var timeToFirstByte = LatencyHistogram()
        var timeToFirstContent = LatencyHistogram()
        var gapBetweenEvents = LatencyHistogram()
        var dataEvents = 0
        var contentChunks = 0
        var heartbeats = 0
        var responseBytes = 0
        var fewestContentChunks = Int.max
        var mostContentChunks = 0

        mutating func merge(_ other: Snapshot) {
            self.timeToFirstByte.merge(other.timeToFirstByte)
            self.timeToFirstContent.merge(other.timeToFirstContent)
            self.gapBetweenEvents.merge(other.gapBetweenEvents)
            self.dataEvents += other.dataEvents
            self.contentChunks += other.contentChunks
            self.heartbeats += other.heartbeats
            self.responseBytes += other.responseBytes
            self.fewestContentChunks = min(self.fewestContentChunks, other.fewestContentChunks)
            self.mostContentChunks = max(self.mostContentChunks, other.mostContentChunks)
        }
    }
}
