import Logging
import Testing

@testable import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ProcessEnvironmentTests {
    @Suite("JournalStream")
    struct JournalStreamTests {
        private var stderrIdentity: String {
            get throws {
                var status = stat()
                try #require(fstat(STDERR_FILENO, &status) == 0)
                return "\(status.st_dev):\(status.st_ino)"
            }
        }

        @Test func falseWithoutJournalStream() throws {
            let environment = EnvironmentOverride(["JOURNAL_STREAM": nil])
            defer { environment.restore() }
            #expect(!JournalStream.stderrIsJournal())
            #expect(SystemdLogging.makeHandler(label: "t") is StandardErrorLogHandler)
        }

        @Test func trueWhenJournalStreamNamesStderr() throws {
            let environment = EnvironmentOverride(["JOURNAL_STREAM": try self.stderrIdentity])
            defer { environment.restore() }
            #expect(JournalStream.stderrIsJournal())
            let handler = SystemdLogging.makeHandler(label: "gateway", syslogIdentifier: "relay")
            let journald = try #require(handler as? JournaldLogHandler)
            #expect(journald.label == "gateway")
            #expect(journald.syslogIdentifier == "relay")
        }

        /// A child that inherited the variable but whose stderr went elsewhere must not log natively.
        @Test(arguments: ["0:0", "12345", "a:b", "1:2:3", ""])
        func falseForAnotherStreamOrGarbage(value: String) throws {
            let environment = EnvironmentOverride(["JOURNAL_STREAM": value])
            defer { environment.restore() }
            #expect(!JournalStream.stderrIsJournal())
        }
    }
}
