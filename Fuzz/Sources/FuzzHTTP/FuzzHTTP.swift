import Dispatch
import Foundation
import Logging
import Synchronization
@testable import RelayGateway
#if canImport(Glibc)
import Glibc
#endif

/// The input is what one client writes on one connection to the real gateway: a `Gateway`
/// started once per fuzz process on a Unix socket in a temporary folder, serving the
/// project's fixture cassettes through the built-in default's pipeline (keepalive, usage),
/// with short client timeouts. Each input is written on a fresh connection, read until the
/// gateway has been quiet for a moment, then the write side is closed and the rest read
/// until the gateway closes. Checked, trapping when broken:
///
/// - the connection ends: the gateway closes it within `connectionDeadline` after the
///   client's half-close (a hang past libFuzzer's -timeout is a finding too);
/// - what came back is a sequence of well-formed HTTP/1.1 responses; a status of 500 or
///   more is a finding (nothing here is an upstream failure); every error status carries an
///   OpenAI-style JSON error (`{"error":{"message":…,"type":…}}`), except HummingbirdCore's
///   own empty `400` + `connection: close` for a request NIO's HTTP parser refused;
/// - afterwards no stream is left running (`activeStreams` back to 0), and the same gateway
///   answers `GET /healthz` (every input) and `GET /v1/models` (every 64th) correctly. With
///   `max_connections: 4`, a connection the gateway fails to let go of shows up as a 503
///   within a few inputs.
///
/// `CHATRELAYD_FUZZ_LOG=debug` (or another level) shows the gateway's log on stderr,
/// `CHATRELAYD_FUZZ_SHOW=1` what it answered.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let harness = Harness.shared
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let received = harness.exchange(input)
    if Harness.show { FileHandle.standardError.write(Data("FuzzHTTP: received \(ResponseCheck.excerpt(received, limit: 4000))\n".utf8)) }
    ResponseCheck.verify(received: received, input: input)
    harness.checkSettled()
    harness.checkHealth()
    return 0
}

/// One gateway for the whole fuzz process, and blocking client connections to it.
final class Harness: @unchecked Sendable {
    static let shared = Harness()

    /// After the last byte arrives, how long the gateway may stay silent before the client
    /// half-closes (a streamed answer from a cassette starts well within this).
    static let quietMilliseconds: Int32 = 25
    /// From the client's half-close to the gateway's close, at most (a finding when passed).
    static let connectionDeadline: Double = 5
    static let modelsEvery = 64
    /// `CHATRELAYD_FUZZ_SHOW=1`: print what the gateway answered to each input (to reproduce one).
    static let show = ProcessInfo.processInfo.environment["CHATRELAYD_FUZZ_SHOW"] == "1"

    static let temporaryDirectory = Mutex<String?>(nil)
    let directory: String
    let socketPath: String
    let gateway: Gateway
    private var inputs = 0

    private init() {
        signal(SIGPIPE, SIG_IGN)
        let level = ProcessInfo.processInfo.environment["CHATRELAYD_FUZZ_LOG"].flatMap(Logger.Level.init(rawValue:))
        LoggingSystem.bootstrap { label in
            guard let level else { return SwiftLogNoOpLogHandler() }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var template = Array((NSTemporaryDirectory() + "chatrelayd-fuzz-http-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("FuzzHTTP: mkdtemp failed: errno \(errno)") }
        let directory = String(cString: made)
        self.directory = directory
        Harness.temporaryDirectory.withLock { $0 = directory }
        atexit {
            // The socket, the configuration and the folder go when the fuzzer exits.
            if let directory = Harness.temporaryDirectory.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: directory) }
        }
        self.socketPath = self.directory + "/gw.sock"
        // Fuzz/Sources/FuzzHTTP/FuzzHTTP.swift -> the repository root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let configPath = self.directory + "/chatrelayd.yaml"
        let yaml = """
            server:
              socket: \(self.socketPath)
              request_timeout: 300ms
              idle_timeout: 2s
              write_timeout: 2s
              max_connections: 4
              max_request_body: 32KiB
              drain_timeout: 1s
            upstreams:
              - name: recorded
                kind: cassette
                cassettes: [\(root)/Tests/Fixtures/cassettes]
                pace: none
            models:
              - name: grok-4-fast
                upstream: recorded
              - name: gpt-4o-mini
                upstream: recorded
                aliases: [mini]
              - prefix: recorded/
                upstream: recorded
                strip_prefix: true
            pipeline:
              - stage: keepalive
                interval: 15s
              - stage: usage

            """
        do {
            try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
            // The file, not the text: POST /admin/reload (the fuzzer can send it) reloads it.
            let config = try ConfigLoader.load(path: configPath)
            self.gateway = try Gateway(config: config, configPath: configPath, logger: Logger(label: "chatrelayd-fuzz"))
        } catch {
            fatalError("FuzzHTTP: cannot start the gateway: \(error)")
        }
        let gateway = self.gateway
        Task.detached {
            do {
                try await gateway.run()
                fatalError("FuzzHTTP: the gateway stopped")
            } catch {
                fatalError("FuzzHTTP: the gateway failed: \(error)")
            }
        }
        let ready = DispatchSemaphore(value: 0)
        Task.detached {
            _ = await gateway.waitUntilReady()
            ready.signal()
        }
        guard ready.wait(timeout: .now() + 60) == .success else { fatalError("FuzzHTTP: the gateway did not start") }
        FileHandle.standardError.write(Data("FuzzHTTP: gateway listening on \(self.socketPath)\n".utf8))
    }

    /// Writes `input` on a new connection and returns everything the gateway sent until it closed.
    func exchange(_ input: [UInt8]) -> [UInt8] {
        let fd = self.connect()
        defer { close(fd) }
        var received: [UInt8] = []
        var written = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        var halfClosed = false
        var readOpen = true
        var deadline = Self.now() + Self.connectionDeadline
        while readOpen {
            let writing = written < input.count
            if !writing && !halfClosed {
                // Everything is written: wait for the gateway to go quiet, then half-close.
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&descriptor, 1, Self.quietMilliseconds) == 0 {
                    shutdown(fd, Int32(SHUT_WR))
                    halfClosed = true
                    deadline = Self.now() + Self.connectionDeadline
                    continue
                }
            } else {
                let remaining = deadline - Self.now()
                if remaining <= 0 {
                    fatalError(
                        "FuzzHTTP: the connection did not end within \(Self.connectionDeadline) s "
                            + "(written \(written) of \(input.count) bytes, half-closed: \(halfClosed), received \(received.count) bytes: "
                            + "\(ResponseCheck.excerpt(received)))"
                    )
                }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN) | (writing ? Int16(POLLOUT) : 0), revents: 0)
                guard poll(&descriptor, 1, Int32(min(remaining, 1) * 1000) + 1) > 0 else { continue }
                if writing && descriptor.revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 && descriptor.revents & Int16(POLLIN) == 0 {
                    let count = input.withUnsafeBytes { send(fd, $0.baseAddress! + written, input.count - written, Int32(MSG_NOSIGNAL)) }
                    if count > 0 {
                        written += count
                    } else if count < 0 && errno != EAGAIN && errno != EINTR {
                        // The gateway closed on us (EPIPE, ECONNRESET): stop writing, read what it said.
                        written = input.count
                        halfClosed = true
                        deadline = Self.now() + Self.connectionDeadline
                    }
                    if written == input.count { deadline = Self.now() + Self.connectionDeadline }
                    continue
                }
            }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                received += buffer[..<count]
            } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                readOpen = false  // closed (or reset) by the gateway
            }
        }
        return received
    }

    /// Once the connection is gone, no stream may be left counted as running.
    func checkSettled() {
        let limit = Self.now() + Self.connectionDeadline
        while self.gateway.statistics.activeStreams.load(ordering: .relaxed) != 0 {
            if Self.now() > limit {
                fatalError("FuzzHTTP: \(self.gateway.statistics.activeStreams.load(ordering: .relaxed)) streams still active \(Self.connectionDeadline) s after their connection closed")
            }
            usleep(1000)
        }
    }

    /// The same gateway still answers a well-formed request correctly.
    func checkHealth() {
        self.inputs += 1
        self.expectOK("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", containing: #""status":"ok""#)
        if self.inputs % Self.modelsEvery == 1 {
            self.expectOK("GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", containing: #""id":"grok-4-fast""#)
        }
    }

    private func expectOK(_ request: String, containing text: String) {
        let received = self.exchange(Array(request.utf8))
        let responses = ResponseCheck.split(received)
        guard responses.count == 1, let response = responses.first, response.status == 200,
            String(decoding: response.body, as: UTF8.self).contains(text)
        else {
            fatalError("FuzzHTTP: after the input, \(request.prefix(while: { $0 != "\r" })) was not answered 200 with \(text): \(ResponseCheck.excerpt(received))")
        }
    }

    private func connect() -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { fatalError("FuzzHTTP: socket() failed: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(self.socketPath.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { fatalError("FuzzHTTP: connect(\(self.socketPath)) failed: errno \(errno)") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    private static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// Reads back what the gateway sent as HTTP/1.1 responses and checks each.
enum ResponseCheck {
    struct Response {
        var status: Int
        var headers: [(name: String, value: String)]
        var body: [UInt8]
        /// Whether the bytes ran out before the response's framing said it ends.
        var truncated: Bool

        func header(_ name: String) -> String? {
            self.headers.first { $0.name == name }?.value
        }
    }

    static func verify(received: [UInt8], input: [UInt8]) {
        let responses = self.split(received)
        // A HEAD request's response has a Content-Length but no body, so the framing of the
        // responses after it cannot be read without knowing which requests were HEADs.
        let hasHead = input.count >= 4 && (0...(input.count - 4)).contains { input[$0..<($0 + 4)].elementsEqual("HEAD".utf8) }
        for (index, response) in responses.enumerated() {
            let context = "response \(index + 1) of \(responses.count): \(excerpt(received))"
            if response.status == 0 {
                if hasHead && index > 0 { return }
                fatalError("FuzzHTTP: not an HTTP/1.1 response: \(context)")
            }
            if response.status >= 500 {
                fatalError("FuzzHTTP: status \(response.status) for a client's input: \(context)")
            }
            guard response.status >= 400 else { continue }
            if response.truncated {
                if hasHead { return }
                fatalError("FuzzHTTP: an error response cut short: \(context)")
            }
            // HummingbirdCore's answer to a request NIO's parser refused: empty, and the end.
            if response.status == 400, response.body.isEmpty, response.header("connection") == "close" {
                guard index == responses.count - 1 else { fatalError("FuzzHTTP: a response after a connection: close one: \(context)") }
                continue
            }
            guard response.header("content-type")?.hasPrefix("application/json") == true,
                let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                let error = object["error"] as? [String: Any], error["message"] is String, error["type"] is String
            else {
                if hasHead { return }
                fatalError("FuzzHTTP: status \(response.status) without an OpenAI-style error body: \(context)")
            }
        }
    }

    /// Splits bytes into responses by their framing (Content-Length, chunked, or until the
    /// close); status 0 marks bytes that do not start a response.
    static func split(_ bytes: [UInt8]) -> [Response] {
        var responses: [Response] = []
        var start = 0
        while start < bytes.count {
            guard let headEnd = find([13, 10, 13, 10], in: bytes, from: start) else {
                responses.append(Response(status: 0, headers: [], body: Array(bytes[start...]), truncated: true))
                break
            }
            let lines = String(decoding: bytes[start..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
            let statusLine = lines[0].split(separator: " ", maxSplits: 2)
            guard statusLine.count >= 2, statusLine[0] == "HTTP/1.1", statusLine[1].count == 3, let status = Int(statusLine[1]) else {
                responses.append(Response(status: 0, headers: [], body: Array(bytes[start...]), truncated: false))
                break
            }
            let headers = lines.dropFirst().map { line -> (name: String, value: String) in
                let parts = line.split(separator: ":", maxSplits: 1)
                return ((parts.first.map(String.init) ?? "").lowercased(), parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : "")
            }
            var response = Response(status: status, headers: headers, body: [], truncated: false)
            var end = headEnd + 4
            if response.header("transfer-encoding")?.lowercased() == "chunked" {
                while true {
                    guard let lineEnd = find([13, 10], in: bytes, from: end),
                        let size = Int(String(decoding: bytes[end..<lineEnd], as: UTF8.self), radix: 16)
                    else {
                        response.truncated = true
                        break
                    }
                    let chunkEnd = lineEnd + 2 + size
                    guard chunkEnd + 2 <= bytes.count else {
                        response.truncated = true
                        break
                    }
                    response.body += bytes[(lineEnd + 2)..<chunkEnd]
                    end = chunkEnd + 2
                    if size == 0 { break }
                }
            } else if let length = response.header("content-length").flatMap({ Int($0) }) {
                if end + length > bytes.count {
                    response.truncated = true
                    response.body = Array(bytes[end...])
                } else {
                    response.body = Array(bytes[end..<(end + length)])
                }
                end += length
            } else if !(100..<200).contains(status) && status != 204 && status != 304 {
                response.body = Array(bytes[end...])
                end = bytes.count
            }
            responses.append(response)
            if response.truncated { break }
            start = end
        }
        return responses
    }

    static func find(_ pattern: [UInt8], in bytes: [UInt8], from index: Int) -> Int? {
        guard bytes.count >= pattern.count, index <= bytes.count - pattern.count else { return nil }
        return (index...(bytes.count - pattern.count)).first { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) }
    }

    static func excerpt(_ bytes: [UInt8], limit: Int = 600) -> String {
        let text = String(decoding: bytes.prefix(limit), as: UTF8.self).debugDescription
        return bytes.count > limit ? text + "… (\(bytes.count) bytes)" : text
    }
}
