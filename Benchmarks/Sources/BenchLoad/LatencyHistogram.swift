/// Durations in microseconds, counted in log-linear buckets (64 per power of two, so a
/// percentile is off by at most 1.6 %) in constant memory however many are recorded.
///
/// Ten thousand streams of sixty chunks, or a million fast chunks, would otherwise mean
/// millions of stored samples in the process that is supposed to stay out of the way.
struct LatencyHistogram: Sendable {
    private static let exactBelow: UInt64 = 128
    private static let subBuckets = 64
    private static let bucketCount = Int(exactBelow) + (64 - 7) * subBuckets

    private var counts = [UInt64](repeating: 0, count: LatencyHistogram.bucketCount)
    private(set) var count: UInt64 = 0
    private(set) var maximum: UInt64 = 0

    mutating func record(microseconds value: UInt64) {
        self.counts[Self.bucket(of: value)] &+= 1
        self.count &+= 1
        if value > self.maximum { self.maximum = value }
    }

    mutating func merge(_ other: LatencyHistogram) {
        for index in self.counts.indices { self.counts[index] &+= other.counts[index] }
        self.count &+= other.count
        self.maximum = max(self.maximum, other.maximum)
    }

    /// The value below which `fraction` of the recordings fall (0.5 for the median), in
    /// microseconds; nil when nothing was recorded.
    func percentile(_ fraction: Double) -> Double? {
        guard self.count > 0 else { return nil }
        let rank = max(1, UInt64((fraction * Double(self.count)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in self.counts.enumerated() where bucketCount > 0 {
            seen += bucketCount
            if seen >= rank { return min(Self.middle(of: index), Double(self.maximum)) }
        }
        return Double(self.maximum)
    }

    private static func bucket(of value: UInt64) -> Int {
        guard value >= exactBelow else { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount  // 7 or more
        let shift = magnitude - 6  // leaves 7 significant bits: 64...127
        let mantissa = Int(value >> UInt64(shift)) - subBuckets
        return Int(exactBelow) + (magnitude - 7) * subBuckets + mantissa
    }

    private static func middle(of bucket: Int) -> Double {
        guard bucket >= Int(exactBelow) else { return Double(bucket) }
        let offset = bucket - Int(exactBelow)
        let shift = offset / subBuckets + 1
        let mantissa = offset % subBuckets + subBuckets
        let lower = Double(mantissa << shift)
        return lower + Double(1 << shift) / 2
    }
}
