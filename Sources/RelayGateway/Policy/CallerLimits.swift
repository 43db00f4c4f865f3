import Foundation
import RelayCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What each caller has used: requests in the last minute, requests in flight, and tokens
/// spent today. Keyed by the caller (``RelayCore/CallerIdentity/key``), not by rule or
/// configuration generation, so a reload that changes a limit applies it to the next
/// request with everything counted so far.
///
/// Time comes in as arguments (`now` for the minute window, `date` for the UTC day), so
/// tests drive it without a clock.
final class CallerLimits: Sendable {
    /// The token spend of one day, as the state file keeps it.
    struct Budgets: Sendable, Equatable {
        /// The UTC day, `YYYY-MM-DD`.
        var day: String
        /// Prompt plus completion tokens per caller key.
        var tokens: [String: Int]
    }

    /// Whether a request may start, and if not, which limit stops it.
    enum Decision: Sendable, Equatable {
        case admitted
        /// `requests_per_minute` reached; a slot frees up in this many seconds.
        case rateLimited(retryAfter: Int)
        /// `concurrent_streams` reached.
        case tooManyInFlight
        /// `tokens_per_day` spent; the day ends in this many seconds.
        case quotaSpent(spent: Int, retryAfter: Int)
    }

    static let window = Duration.seconds(60)

    private struct State {
        var recent: [String: [ContinuousClock.Instant]] = [:]
        var inFlight: [String: Int] = [:]
        /// Request id to caller key, for requests admitted and not yet finished.
        var leases: [String: String] = [:]
        var budgets: Budgets
    }

    private let state: Mutex<State>

    init(budgets: Budgets? = nil, date: Date = Date()) {
        let today = Self.day(of: date)
        let kept = budgets.flatMap { $0.day == today ? $0 : nil } ?? Budgets(day: today, tokens: [:])
        self.state = Mutex(State(budgets: kept))
    }

    /// Decides whether `key` may start request `requestID` under `rule`'s limits, and
    /// counts it when it may. `trackedRequests` is how many recent requests to remember
    /// per caller (the largest `requests_per_minute` of the policy in force).
    func admit(
        key: String,
        rule: PolicyRule,
        requestID: String,
        trackedRequests: Int,
        now: ContinuousClock.Instant,
        date: Date
    ) -> Decision {
        self.state.withLock { state in
            Self.roll(&state.budgets, to: date)
            let spent = state.budgets.tokens[key, default: 0]
            if let budget = rule.tokensPerDay, spent >= budget {
                return .quotaSpent(spent: spent, retryAfter: Self.secondsUntilNextDay(from: date))
            }
            var recent = state.recent[key, default: []]
            recent.removeAll { $0.advanced(by: Self.window) <= now }
            defer { state.recent[key] = recent.isEmpty ? nil : recent }
            if let limit = rule.requestsPerMinute, recent.count >= limit {
                let freesAt = recent[recent.count - limit].advanced(by: Self.window)
                return .rateLimited(retryAfter: Self.wholeSeconds(now.duration(to: freesAt)))
            }
            if let limit = rule.concurrentStreams, state.inFlight[key, default: 0] >= limit {
                return .tooManyInFlight
            }
            if trackedRequests > 0 {
                recent.append(now)
                if recent.count > trackedRequests { recent.removeFirst(recent.count - trackedRequests) }
            }
            state.inFlight[key, default: 0] += 1
            state.leases[requestID] = key
            return .admitted
        }
    }

    /// A request is over: it no longer counts as in flight, and its tokens count against
    /// `key`'s budget. Returns whether the budgets changed (and want saving).
    @discardableResult
    func finish(requestID: String, key: String, tokens: Int, date: Date) -> Bool {
        self.state.withLock { state in
            if let leased = state.leases.removeValue(forKey: requestID) {
                let remaining = state.inFlight[leased, default: 1] - 1
                state.inFlight[leased] = remaining > 0 ? remaining : nil
            }
            let rolled = Self.roll(&state.budgets, to: date)
            guard tokens > 0 else { return rolled }
            state.budgets.tokens[key, default: 0] += tokens
            return true
        }
    }

    /// Today's spend, for the state file.
    func budgets(date: Date = Date()) -> Budgets {
        self.state.withLock { state in
            Self.roll(&state.budgets, to: date)
            return state.budgets
        }
    }

    /// Requests of `key` in flight.
    func inFlight(_ key: String) -> Int { self.state.withLock { $0.inFlight[key, default: 0] } }

    /// Starts a new day's spend when `date` is past the one kept.
    @discardableResult
    private static func roll(_ budgets: inout Budgets, to date: Date) -> Bool {
        let today = self.day(of: date)
        guard budgets.day != today else { return false }
        budgets = Budgets(day: today, tokens: [:])
        return true
    }

    /// The UTC day of `date`, `YYYY-MM-DD`.
    static func day(of date: Date) -> String {
        var seconds = time_t(floor(date.timeIntervalSince1970))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        // Not `String(format:)`: it goes through Foundation's formatter, 2% of a request's CPU.
        func padded(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return padded(parts.tm_year + 1900, 4) + "-" + padded(parts.tm_mon + 1, 2) + "-" + padded(parts.tm_mday, 2)
    }

    /// Whole seconds until the next UTC midnight (at least 1).
    static func secondsUntilNextDay(from date: Date) -> Int {
        let intoDay = date.timeIntervalSince1970.truncatingRemainder(dividingBy: 86_400)
        return max(1, Int((86_400 - intoDay).rounded(.up)))
    }

    /// A duration rounded up to whole seconds, at least 1 (the least `Retry-After` can say).
    static func wholeSeconds(_ duration: Duration) -> Int {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return max(1, Int(seconds.rounded(.up)))
    }

    /// Tokens a finished request spent: prompt plus completion, or the total when the
    /// provider gave only that.
    static func tokens(of usage: TokenUsage) -> Int {
        if usage.prompt == nil, usage.completion == nil { return max(0, usage.total ?? 0) }
        return max(0, (usage.prompt ?? 0) + (usage.completion ?? 0))
    }
}
