import Foundation
public import HTTPTypes

/// How long to wait before the next attempt: exponential backoff with full jitter, unless
/// the upstream said how long (`Retry-After`, `x-ratelimit-reset-*`).
///
/// Pure: the random source and the current date come in, so tests can fix both.
public struct RetryBackoff: Sendable, Equatable {
    /// The first retry's ceiling; it doubles with each retry.
    public var base: Duration
    /// No computed wait is longer than this.
    public var cap: Duration
    /// An upstream asking for a longer wait than this is not retried (its error goes back).
    public var maximumRetryAfter: Duration

    public init(base: Duration = .milliseconds(250), cap: Duration = .seconds(8), maximumRetryAfter: Duration = .seconds(30)) {
        self.base = base
        self.cap = cap
        self.maximumRetryAfter = maximumRetryAfter
    }

    /// What to do after failed attempt number `attempt` (0 for the first).
    public enum Decision: Sendable, Equatable {
        case wait(Duration)
        /// The upstream asked for longer than ``maximumRetryAfter``.
        case giveUp(asked: Duration)
    }

    public func decision(afterAttempt attempt: Int, upstreamAsked: Duration?, random: inout some RandomNumberGenerator) -> Decision {
        if let asked = upstreamAsked {
            return asked > self.maximumRetryAfter ? .giveUp(asked: asked) : .wait(asked)
        }
        let exponent = min(attempt, 30)
        let ceiling = min(self.cap, self.base * (1 << exponent))
        let nanoseconds = Self.nanoseconds(ceiling)
        guard nanoseconds > 0 else { return .wait(.zero) }
        return .wait(.nanoseconds(Int64.random(in: 0...nanoseconds, using: &random)))
    }

    /// The wait an upstream asks for in its response headers: `Retry-After` (seconds or an
    /// HTTP date), else the longest `x-ratelimit-reset-*` (`1s`, `6m0s`, `20ms`).
    /// A wait an upstream asked for in seconds. More than a duration can hold is clamped, so
    /// that it is still longer than `max_retry_after` (and the upstream's error goes back),
    /// instead of trapping in the conversion; not a number, or negative, is no ask.
    static func asked(seconds: Double) -> Duration? {
        guard !seconds.isNaN, seconds >= 0 else { return nil }
        return Duration.parsed(seconds: min(seconds, Duration.longestParsedSeconds.nextDown))
    }

    public static func upstreamAsked(in headers: HTTPFields, now: Date = Date()) -> Duration? {
        if let value = headers[HTTPField.Name("retry-after")!]?.trimmingCharacters(in: .whitespaces) {
            // The upstream's text: a number too large for a duration is ignored, not trapped on.
            if let seconds = Double(value), let wait = Self.asked(seconds: seconds) { return wait }
            if let date = Self.httpDate(value), let wait = Self.asked(seconds: max(0, date.timeIntervalSince(now))) { return wait }
        }
        var longest: Duration?
        for field in headers where field.name.canonicalName.hasPrefix("x-ratelimit-reset") {
            let value = field.value.trimmingCharacters(in: .whitespaces)
            guard let wait = GoDuration.parse(value) ?? Double(value).flatMap({ Self.asked(seconds: $0) }) else { continue }
            longest = max(longest ?? .zero, wait)
        }
        return longest
    }

    static func httpDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
