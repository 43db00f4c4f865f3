import Logging
import Testing

@testable import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("StandardErrorLogHandler")
struct StandardErrorLogHandlerTests {
    /// Logs through a handler writing to a pipe and returns the line it wrote.
    private func line(_ body: (inout Logger) -> Void) throws -> String {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        var logger = Logger(label: "gateway") { label in
            StandardErrorLogHandler(label: label, metadataProvider: nil, fileDescriptor: ends[1])
        }
        body(&logger)
        close(ends[1])
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(ends[0], &chunk, chunk.count)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("StreamLogHandler's format: time, level, label, sorted metadata, source, message; one line")
    func format() throws {
        let written = try self.line { logger in
            logger[metadataKey: "request_id"] = "req_1"
            logger[metadataKey: "model"] = "gpt-4o"
            logger[metadataKey: "model"] = "gpt-4o-mini"  // set twice: the last one counts
            logger.info("request completed", metadata: ["status": "200", "request_id": "req_2"])
        }
        #expect(written.hasSuffix(" info gateway: model=gpt-4o-mini request_id=req_2 status=200 [SystemdTests] request completed\n"))
        let time = try #require(written.split(separator: " ").first)
        #expect(time.count == "2026-11-26T05:00:00+0000".count && time.dropFirst(10).first == "T")
        #expect(written.filter { $0 == "\n" }.count == 1)
    }

    @Test("Metadata keys that share their first bytes, or are prefixes of others, in string order; repeats once")
    func keyOrder() throws {
        // Keys the same in their first 8 and first 16 bytes (which are compared as numbers),
        // and longer ones that differ only after 16.
        let keys = [
            "events_sent", "caller_uid", "events_received", "a", "caller_gid", "abcdefghij", "abcdefgh", "ab", "caller_pid", "zz", "B",
            "completion_tokens_b", "completion_tokens", "completion_token", "completion_tokens_a", "cached_prompt_tokens",
        ]
        let written = try self.line { logger in
            for key in keys { logger[metadataKey: key] = "1" }
            logger.info("done", metadata: ["caller_pid": "2", "abcdefghi": "3", "completion_tokens_a": "4"])
        }
        let expected = (keys + ["abcdefghi"]).sorted().map { key in
            "\(key)=\(key == "caller_pid" ? "2" : key == "abcdefghi" ? "3" : key == "completion_tokens_a" ? "4" : "1")"
        }
        #expect(written.hasSuffix(" info gateway: \(expected.joined(separator: " ")) [SystemdTests] done\n"), "\(written)")
    }

    @Test("Keys with other characters in string order, after normalising: a combining mark sorts with its letter, and the two spellings of a key are one key")
    func nonASCIIKeyOrder() throws {
        let written = try self.line { logger in
            for key in ["abcf", "abce\u{301}", "abcd", "cafe\u{301}", "zeta"] { logger[metadataKey: key] = "1" }
            logger.info("done", metadata: ["caf\u{E9}": "2"])
        }
        // "abcé" sorts after "abcf" though its first byte that differs, "e", is before "f".
        #expect(written.hasSuffix(" info gateway: abcd=1 abcf=1 abce\u{301}=1 caf\u{E9}=2 zeta=1 [SystemdTests] done\n"), "\(written)")
    }

    @Test("No metadata, and levels below the logger's are not written")
    func levels() throws {
        let written = try self.line { logger in
            logger.debug("not written")
            logger.warning("careful")
        }
        #expect(written.hasSuffix(" warning gateway: [SystemdTests] careful\n"))
        #expect(!written.contains("not written"))
    }
}
