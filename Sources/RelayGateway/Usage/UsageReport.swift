import Foundation
public import RelayCore

/// Requests and tokens per caller and per model over a period, added up from the usage
/// ledger (`server.usage_ledger`): what `chatrelayd usage` prints.
///
/// A request counts in the period its ledger line's `ts` (when it ended) falls in. Tokens
/// are prompt plus completion, as the daily budgets count them. Lines that are not JSON
/// (a line torn by a crash) are skipped and counted.
public struct UsageReport: Sendable, Equatable {
    /// What the rows are per.
    public enum Grouping: String, Sendable, CaseIterable {
        case caller
        case model
        case callerAndModel = "caller,model"
    }

    /// One row's sums.
    public struct Row: Sendable, Equatable {
        public var caller: String?
        public var model: String?
        public var requests = 0
        /// Requests that ended with an HTTP error or an error event (denials included).
        public var failed = 0
        public var promptTokens = 0
        public var completionTokens = 0
        /// Prompt plus completion (or the total, where the provider gave only that).
        public var tokens = 0

        public init(caller: String? = nil, model: String? = nil) {
            self.caller = caller
            self.model = model
        }
    }

    public var ledger: String
    public var from: Date
    public var to: Date
    public var grouping: Grouping
    public var rows: [Row]
    public var total: Row
    /// Lines that could not be read.
    public var skippedLines: Int

    /// Reads the ledger at `path` and adds up the lines with `from <= ts < to`.
    public static func read(ledger path: String, from: Date, to: Date, by grouping: Grouping) throws(ConfigError) -> UsageReport {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read the usage ledger \(path)")
        }
        var report = UsageReport(ledger: path, from: from, to: to, grouping: grouping, rows: [], total: Row(), skippedLines: 0)
        var sums: [String: Row] = [:]
        let parser = ISO8601DateFormatter()
        for line in data.split(separator: UInt8(ascii: "\n")) where !line.isEmpty {
            guard let json = try? JSONValue(parsing: line), let stamp = json["ts"]?.stringValue, let date = parser.date(from: stamp) else {
                report.skippedLines += 1
                continue
            }
            guard date >= from, date < to else { continue }
            let caller = Self.callerKey(json["caller"])
            let model = json["model"]?.stringValue ?? ""
            var row = Row()
            switch grouping {
            case .caller: row.caller = caller
            case .model: row.model = model
            case .callerAndModel: (row.caller, row.model) = (caller, model)
            }
            let key = "\(row.caller ?? "")\u{0}\(row.model ?? "")"
            var sum = sums[key] ?? row
            Self.add(json, to: &sum)
            Self.add(json, to: &report.total)
            sums[key] = sum
        }
        report.rows = sums.values.sorted {
            ($0.tokens, $1.caller ?? "", $1.model ?? "") > ($1.tokens, $0.caller ?? "", $0.model ?? "")
        }
        return report
    }

    private static func add(_ line: JSONValue, to row: inout Row) {
        row.requests += 1
        let status = line["status"]?.intValue ?? 0
        if status >= 400 || line["error"]?.stringValue != nil { row.failed += 1 }
        let tokens = line["tokens"]
        let usage = TokenUsage(prompt: tokens?["prompt"]?.intValue, completion: tokens?["completion"]?.intValue, total: tokens?["total"]?.intValue)
        row.promptTokens += usage.prompt ?? 0
        row.completionTokens += usage.completion ?? 0
        row.tokens += CallerLimits.tokens(of: usage)
    }

    /// The caller's key as the line gives it; older lines (without `key`) get it made from their ids.
    static func callerKey(_ caller: JSONValue?) -> String {
        guard let caller, let uid = caller["uid"]?.intValue else { return "unknown" }
        if let key = caller["key"]?.stringValue { return key }
        let id = UInt32(clamping: uid)
        let identity = CallerIdentity(
            uid: id, gid: UInt32(clamping: caller["gid"]?.intValue ?? 0), pid: 0,
            user: caller["user"]?.stringValue ?? CallerIdentityReader.userName(id), unit: caller["unit"]?.stringValue
        )
        return identity.key
    }

    /// The period as people write it: `2025-06-01 00:00:00Z`.
    static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate, .withTime, .withColonSeparatorInTime, .withSpaceBetweenDateAndTime, .withTimeZone]
        return formatter.string(from: date)
    }

    /// A plain-text table, widest numbers right-aligned, with a TOTAL line.
    public func table() -> String {
        var header: [String] = []
        if self.grouping != .model { header.append("CALLER") }
        if self.grouping != .caller { header.append("MODEL") }
        let numbers = ["REQUESTS", "FAILED", "PROMPT", "COMPLETION", "TOKENS"]
        func cells(_ row: Row, label: String?) -> [String] {
            var names: [String] = []
            if self.grouping != .model { names.append(label ?? row.caller ?? "") }
            if self.grouping != .caller { names.append(label == nil ? row.model ?? "" : "") }
            return names + [row.requests, row.failed, row.promptTokens, row.completionTokens, row.tokens].map(String.init)
        }
        let body = self.rows.map { cells($0, label: nil) } + [cells(self.total, label: "TOTAL")]
        let all = [header + numbers] + body
        let textColumns = header.count
        let widths = (0..<all[0].count).map { column in all.map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column < textColumns ? cell + pad : pad + cell
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        var lines = ["usage from \(Self.format(self.from)) to \(Self.format(self.to)), by \(self.grouping.rawValue) (ledger \(self.ledger))", ""]
        lines += all.map(line)
        if self.skippedLines > 0 { lines.append("(\(self.skippedLines) unreadable ledger line\(self.skippedLines == 1 ? "" : "s") skipped)") }
        return lines.joined(separator: "\n")
    }

    /// The report as one JSON object.
    public func json() -> JSONValue {
        func object(_ row: Row) -> JSONValue {
            var members: [String: JSONValue] = [
                "requests": .number(Double(row.requests)), "failed": .number(Double(row.failed)),
                "prompt_tokens": .number(Double(row.promptTokens)), "completion_tokens": .number(Double(row.completionTokens)),
                "tokens": .number(Double(row.tokens)),
            ]
            if let caller = row.caller { members["caller"] = .string(caller) }
            if let model = row.model { members["model"] = .string(model) }
            return .object(members)
        }
        let stamp = ISO8601DateFormatter()
        return [
            "ledger": .string(self.ledger),
            "from": .string(stamp.string(from: self.from)),
            "to": .string(stamp.string(from: self.to)),
            "by": .string(self.grouping.rawValue),
            "rows": .array(self.rows.map(object)),
            "total": object(self.total),
            "skipped_lines": .number(Double(self.skippedLines)),
        ]
    }

    /// The period a command line asks for: `day` (`YYYY-MM-DD`, UTC), or the last `since`
    /// (`90m`, `24h`, `7d`), or by default today (UTC), the day token budgets count.
    public static func period(day: String?, since: String?, now: Date = Date()) throws(ConfigError) -> (from: Date, to: Date) {
        if let day {
            let parser = ISO8601DateFormatter()
            guard let start = parser.date(from: day + "T00:00:00Z") else { throw ConfigError("--day '\(day)' is not a date like 2025-06-01") }
            return (start, start.addingTimeInterval(86_400))
        }
        if let since {
            let seconds: Double
            if since.hasSuffix("d"), let days = Double(since.dropLast()), days >= 0 {
                seconds = days * 86_400
            } else {
                do {
                    seconds = try ConfigDuration(parsing: since).seconds
                } catch {
                    throw ConfigError("--since '\(since)' is not a duration (write it like 90m, 24h or 7d)")
                }
            }
            return (now.addingTimeInterval(-seconds), now.addingTimeInterval(1))
        }
        let midnight = floor(now.timeIntervalSince1970 / 86_400) * 86_400
        return (Date(timeIntervalSince1970: midnight), Date(timeIntervalSince1970: midnight + 86_400))
    }
}

extension UsageReport {
    /// The configuration `chatrelayd usage` reads when given none.
    public static let systemConfig = "/etc/chatrelayd/chatrelayd.yaml"

    /// What `chatrelayd usage` prints for its options: the ledger from `ledger` or from
    /// the configuration at `config`, over the period `day`/`since` names, as a table or JSON.
    public static func commandOutput(config: String?, ledger: String?, since: String?, day: String?, by: String, json: Bool) throws(ConfigError) -> String {
        guard since == nil || day == nil else { throw ConfigError("give --since or --day, not both") }
        guard let grouping = Grouping(rawValue: by) else {
            throw ConfigError("--by is one of \(Grouping.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let path: String
        if let ledger {
            path = ledger
        } else {
            let configPath = config ?? self.systemConfig
            guard let named = try ConfigLoader.load(path: configPath).server.usageLedger else {
                throw ConfigError("\(configPath) sets no server.usage_ledger (or pass --ledger PATH)")
            }
            path = named
        }
        let period = try self.period(day: day, since: since)
        let report = try self.read(ledger: path, from: period.from, to: period.to, by: grouping)
        return json ? report.json().serialized() : report.table()
    }
}
