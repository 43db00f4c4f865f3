import Foundation
import RelayCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An append-only JSON-lines file with one usage record per request.
///
/// Each record is one `write(2)` on a descriptor opened with `O_APPEND`, so lines from
/// concurrent requests never interleave and a crash leaves at most one torn last line.
final class UsageLedger: Sendable {
    let path: String
    private let descriptor: Mutex<Int32>

    init(path: String) throws(ConfigError) {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw ConfigError("cannot open the usage ledger \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        self.descriptor = Mutex(fd)
    }

    deinit {
        self.descriptor.withLock { _ = close($0) }
    }

    func append(_ record: UsageRecord) {
        var line = Array(Self.json(record).serialized().utf8)
        line.append(UInt8(ascii: "\n"))
        self.descriptor.withLock { fd in
            _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }

    /// The record as the ledger and `/metrics`-less tools read it.
    static func json(_ record: UsageRecord, now: Date = Date()) -> JSONValue {
        func number(_ value: Int?) -> JSONValue { value.map { .number(Double($0)) } ?? .null }
        func milliseconds(_ value: Double?) -> JSONValue { value.map { .number(($0 * 10_000).rounded() / 10) } ?? .null }
        var object: [String: JSONValue] = [
            "ts": .string(ISO8601DateFormatter().string(from: now)),
            "request_id": .string(record.requestID),
            "model": .string(record.requestedModel),
            "served_model": record.servedModel.map { .string($0) } ?? .null,
            "upstream": .string(record.upstream),
            "status": .number(Double(record.status)),
            "stream": .bool(record.stream),
            "finish_reason": record.finishReason.map { .string($0) } ?? .null,
            "error": record.error.map { .string($0) } ?? .null,
            "client_disconnected": .bool(record.clientDisconnected),
            "tokens": [
                "prompt": number(record.tokens.prompt), "completion": number(record.tokens.completion),
                "reasoning": number(record.tokens.reasoning), "cached_prompt": number(record.tokens.cachedPrompt),
                "total": number(record.tokens.total),
            ],
            "attempts": .number(Double(record.attempts)),
            "events_received": .number(Double(record.eventsReceived)),
            "events_sent": .number(Double(record.eventsSent)),
            "empty_chunks_dropped": .number(Double(record.emptyChunksDropped)),
            "heartbeats_sent": .number(Double(record.heartbeatsSent)),
            "moderation": .array(record.moderation.map(\.json)),
            "ttfb_ms": milliseconds(record.timeToFirstByte),
            "ttfc_ms": milliseconds(record.timeToFirstContent),
            "total_ms": milliseconds(record.totalTime),
        ]
        if let caller = record.caller {
            object["caller"] = [
                "uid": .number(Double(caller.uid)), "gid": .number(Double(caller.gid)), "pid": .number(Double(caller.pid)),
                "unit": caller.unit.map { .string($0) } ?? .null,
                "user_unit": caller.userUnit.map { .string($0) } ?? .null,
                "user": caller.user.map { .string($0) } ?? .null,
                "group": caller.group.map { .string($0) } ?? .null,
                "groups": .array(caller.supplementaryGroups.map { .string($0.description) }),
                "key": .string(caller.key),
            ]
        } else {
            object["caller"] = .null
        }
        return .object(object)
    }
}
