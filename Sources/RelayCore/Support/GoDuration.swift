import Foundation

/// Go's `time.Duration` text (`189.396459ms`, `1m2.5s`), as go-vcr writes it.
public enum GoDuration {
    /// Parses `1m2.5s`, `189.396459ms`, `0`; nil for anything else.
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("μs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        var seconds = 0.0
        guard !rest.isEmpty else { return nil }
        if rest == "0" { return .zero }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            // Longest unit first so that "ms" is not read as "m".
            guard let (unit, scale) = units.sorted(by: { $0.0.count > $1.0.count }).first(where: { rest.hasPrefix($0.0) }) else {
                return nil
            }
            rest = rest.dropFirst(unit.count)
            seconds += value * scale
        }
        guard seconds.isFinite, seconds < Duration.longestParsedSeconds else { return nil }
        return .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}

extension Duration {
    /// The bound on a duration read from text (a config value, an upstream's header, a
    /// cassette): 10⁹ s, about 31 years. Converting seconds to `Int64` traps past about 292
    /// years (in nanoseconds), so text that says more is refused instead; the config fuzzer
    /// found `idle_timeout: 3222…2` crashing the loader.
    public static let longestParsedSeconds: Double = 1e9

    /// `seconds` read from text, to the millisecond; nil when it is negative, not a finite
    /// number, or not below ``longestParsedSeconds``.
    public static func parsed(seconds: Double) -> Duration? {
        guard seconds.isFinite, seconds >= 0, seconds < Self.longestParsedSeconds else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
