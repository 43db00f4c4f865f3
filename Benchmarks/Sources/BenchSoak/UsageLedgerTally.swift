import Foundation

/// The relay's usage ledger (`server.usage_ledger`, one JSON line per request), counted by
/// outcome, to check that every request the soak sent was recorded once, as it ended.
struct UsageLedgerTally: Codable, Sendable, Equatable {
    var lines = 0
    /// `ok` (status 200, the client stayed), `client_disconnected`, or `status_N`.
    var outcomes: [String: Int] = [:]
    var unreadableLines = 0

    static let answered = "ok"
    static let clientDisconnected = "client_disconnected"

    /// The lines after the first `skipping` (those written before the soak started).
    static func read(path: String, skipping: Int = 0) -> UsageLedgerTally {
        var tally = UsageLedgerTally()
        guard let data = FileManager.default.contents(atPath: path) else { return tally }
        for line in data.split(separator: UInt8(ascii: "\n")).dropFirst(skipping) {
            tally.lines += 1
            guard let record = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                let status = record["status"] as? Int
            else {
                tally.unreadableLines += 1
                continue
            }
            let outcome: String
            if record["client_disconnected"] as? Bool == true {
                outcome = Self.clientDisconnected
            } else if status == 200 {
                outcome = Self.answered
            } else {
                outcome = "status_\(status)"
            }
            tally.outcomes[outcome, default: 0] += 1
        }
        return tally
    }

    /// The lines a ledger has now (the soak starts counting after them).
    static func lineCount(path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path) else { return 0 }
        return data.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
    }

    /// What the ledger must hold for the requests sent: each kind's expected outcome.
    static func expectedOutcomes(for sent: [SoakRequestKind: Int]) -> [String: Int] {
        var outcomes: [String: Int] = [:]
        for (kind, count) in sent where count > 0 {
            let outcome: String
            switch kind {
            case .stream, .completion: outcome = Self.answered
            case .disconnect: outcome = Self.clientDisconnected
            case .unknownModel, .invalidJSON, .upstreamError, .upstreamRateLimit: outcome = "status_\(kind.expectedStatus)"
            }
            outcomes[outcome, default: 0] += count
        }
        return outcomes
    }
}
