import Foundation
import RelayCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The callers' token spend of the day in `STATE_DIRECTORY/token-budgets.json`, so that a
/// restart does not hand out fresh budgets.
///
/// Written the way a crash cannot corrupt: the whole file goes to a temporary file next to
/// it, is flushed to disk (`fsync`), and replaces the old one with `rename(2)`, which is
/// atomic; then the folder is flushed so the rename itself survives a power cut. A reader
/// sees the old file or the new one, never a mix.
///
/// ```json
/// {"version":1,"day":"2025-06-01","tokens":{"alice":1834,"app-summarize.service (svc-bot)":90211}}
/// ```
final class TokenBudgetStore: Sendable {
    static let fileName = "token-budgets.json"

    let directory: String
    var path: String { self.directory + "/" + Self.fileName }
    private let writing = Mutex(())

    init(directory: String) {
        self.directory = directory
    }

    /// Why the file could not be read or written.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The saved spend; nil when there is no file yet.
    func load() throws(Failure) -> CallerLimits.Budgets? {
        guard FileManager.default.fileExists(atPath: self.path) else { return nil }
        guard let data = FileManager.default.contents(atPath: self.path) else {
            throw Failure(description: "cannot read \(self.path)")
        }
        guard let json = try? JSONValue(parsing: Array(data)), json["version"]?.intValue == 1,
              let day = json["day"]?.stringValue, let tokens = json["tokens"]?.objectValue
        else {
            throw Failure(description: "\(self.path) is not a token budget file of version 1")
        }
        var spent: [String: Int] = [:]
        for (key, value) in tokens {
            guard let count = value.intValue else { throw Failure(description: "\(self.path): tokens of '\(key)' is not a number") }
            spent[key] = count
        }
        return CallerLimits.Budgets(day: day, tokens: spent)
    }

    /// Replaces the file with `budgets`, atomically.
    func save(_ budgets: CallerLimits.Budgets) throws(Failure) {
        let tokens = budgets.tokens.mapValues { JSONValue.number(Double($0)) }
        let json: JSONValue = ["version": 1, "day": .string(budgets.day), "tokens": .object(tokens)]
        try self.writeAtomically(Array((json.serialized() + "\n").utf8))
    }

    /// Moves a file that cannot be read out of the way (kept for a look), so that saving can go on.
    func setAside() -> String? {
        let aside = self.path + ".unreadable"
        return rename(self.path, aside) == 0 ? aside : nil
    }

    private func writeAtomically(_ bytes: [UInt8]) throws(Failure) {
        try self.writing.withLock { _ throws(Failure) in
            try? FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
            let temporary = self.path + ".tmp"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
            guard fd >= 0 else { throw Self.failure("cannot create \(temporary)") }
            var written = 0
            while written < bytes.count {
                let count = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else {
                    let failure = Self.failure("cannot write \(temporary)")
                    close(fd)
                    unlink(temporary)
                    throw failure
                }
                written += count
            }
            guard fsync(fd) == 0 else {
                let failure = Self.failure("cannot flush \(temporary)")
                close(fd)
                unlink(temporary)
                throw failure
            }
            close(fd)
            guard rename(temporary, self.path) == 0 else {
                let failure = Self.failure("cannot replace \(self.path)")
                unlink(temporary)
                throw failure
            }
            let folder = open(self.directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if folder >= 0 {
                _ = fsync(folder)
                close(folder)
            }
        }
    }

    private static func failure(_ what: String) -> Failure {
        Failure(description: "\(what): \(String(cString: strerror(errno)))")
    }
}
