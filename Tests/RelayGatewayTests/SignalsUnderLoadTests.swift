import Foundation
import RelayCore
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGHUP at scale, against the real daemon: hundreds of streams in flight at
/// a stop, reloads every second while clients keep asking. (`kill -9` under socket
/// activation needs a real systemd: `Tests/system/run.sh`.)
@Suite("Signals under load", .serialized, .timeLimit(.minutes(3)))
struct SignalsUnderLoadTests {
    static func config(loopbackPort: Int, ledger: String, drain: String = "20s") -> String {
        DaemonLifecycleTests.config(loopbackPort: loopbackPort, drain: drain, ledger: ledger, pipeline: ["usage"])
    }

    /// A raw HTTP/1.1 answer as `RawUnixClient` read it.
    struct RawAnswer {
        var text: String

        var status: Int { Int(self.text.split(separator: " ").dropFirst().first ?? "") ?? 0 }

        var requestID: String? {
            self.text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-request-id:") }
                .map { $0.dropFirst("x-request-id:".count).trimmingCharacters(in: .whitespaces) }
        }

        /// The `data:` payloads in order (chunk-size lines never start with `data: `). CR LF
        /// is made LF first: a Swift String sees CR LF as one Character, not as LF.
        var dataEvents: [String] {
            self.text.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n")
                .filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        }

        /// Whether the chunked body was ended properly.
        var isComplete: Bool { self.text.hasSuffix("\r\n0\r\n\r\n") }
    }

    @Test("SIGTERM with 200 streams in flight: each finishes within the drain time or ends with one shutting_down event, each has its usage record")
    func stopWithTwoHundredStreams() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("sigterm-load")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, ledger: ledger, drain: "15s"))
        let socket = gateway.socketPath
        // Half are ~4 s long and should finish within the drain time; half would take a
        // minute and must be cut by it.
        let short = (0..<100).map { _ in RawUnixClient.post("/v1/chat/completions", json: GatewayEndToEndTests.chatBody(model: "loop-short-paced", stream: true)) }
        let long = (0..<100).map { _ in RawUnixClient.post("/v1/chat/completions", json: GatewayEndToEndTests.chatBody(model: "loop-long-paced", stream: true)) }
        let clients = Task { try await onOwnThread { try RawUnixClient.exchangeAll(short + long, socketPath: socket, timeoutSeconds: 90) } }
        // Every stream has reached the upstream: all 200 are in flight.
        #expect(await upstream.waitFor("request:loop-long-paced", count: 100))
        #expect(await upstream.waitFor("request:loop-short-paced", count: 100))
                let inFlight = upstream.count("finished:loop-short-paced")
        let signalled = ContinuousClock.now
        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForNotification("STOPPING=1"))
        let answers = try await clients.value.map(RawAnswer.init)
        #expect(try await gateway.stop() == 0)
        let stopTime = ContinuousClock.now - signalled

        var completed = 0
        var cut = 0
        for (index, answer) in answers.enumerated() {
            let events = answer.dataEvents
            #expect(answer.status == 200, "stream \(index): \(answer.text.prefix(200))")
            #expect(answer.text.hasSuffix("\r\n0\r\n\r\n"), "stream \(index) ended its chunked body: \(answer.text.suffix(200))")
            if events.last == "[DONE]" {
                completed += 1
                #expect(index < 100, "a one-minute stream cannot finish within the drain time")
                #expect(events.count == 15, "stream \(index): every event")
            } else {
                cut += 1
                let errors = events.filter { $0.hasPrefix(#"{"error""#) }
                #expect(errors.count == 1, "stream \(index): one error event")
                let last = try JSONValue(parsing: Array((events.last ?? "").utf8))
                #expect(last["error"]?["code"]?.stringValue == "shutting_down", "stream \(index): \(events.last ?? "")")
            }
        }
        print("SIGTERM with 200 streams: \(completed) finished with [DONE], \(cut) ended with shutting_down; stop took \(stopTime); \(inFlight) short streams had finished before the signal")
        #expect(completed > 0, "the drain time lets streams finish")
        #expect(cut >= 100)

        // One ledger record per request, matched by request id.
        let records = try ledgerRecords(ledger)
        #expect(records.count == 200)
        let byID = Dictionary(records.map { ($0["request_id"]?.stringValue ?? "", $0) }, uniquingKeysWith: { first, _ in first })
        for (index, answer) in answers.enumerated() {
            let record = try #require(answer.requestID.flatMap { byID[$0] }, "stream \(index) has its record")
            let wasCut = answer.dataEvents.last != "[DONE]"
            #expect((record["error"]?.stringValue != nil) == wasCut, "stream \(index): \(record)")
            #expect(record["status"]?.intValue == 200)
        }
    }

    @Test("SIGTERM: streams whose upstream never pauses still end with shutting_down at the drain time")
    func stopCutsFirehoses() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("sigterm-firehose")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, ledger: directory + "/usage.jsonl", drain: "2s"))
        let socket = gateway.socketPath
        let request = RawUnixClient.post("/v1/chat/completions", json: GatewayEndToEndTests.chatBody(model: "loop-firehose", stream: true))
        // More such streams than the daemon has cores (and so threads in Swift's cooperative
        // pool), each read as fast as it comes, keeping only its end (it is megabytes).
        let streams = ProcessInfo.processInfo.activeProcessorCount + 2
        let clients = (0..<streams).map { _ in
            Task {
                try await onOwnThread { () -> (tail: String, bytes: Int) in
                    let fd = try RawUnixClient.connect(socket)
                    defer { close(fd) }
                    let bytes = Array(request.utf8)
                    _ = write(fd, bytes, bytes.count)
                    var tail = [UInt8]()
                    var total = 0
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    while true {
                        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                        guard poll(&descriptor, 1, 60_000) > 0 else { break }
                        let count = read(fd, &buffer, buffer.count)
                        guard count > 0 else { break }
                        total += count
                        tail = Array((tail + buffer[..<count]).suffix(4096))
                        if tail.count >= 7, tail.suffix(7).elementsEqual(Array("\r\n0\r\n\r\n".utf8)) { break }
                    }
                    return (String(decoding: tail, as: UTF8.self), total)
                }
            }
        }
        #expect(await upstream.waitFor("request:loop-firehose", count: streams))
        let signalled = ContinuousClock.now
        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForNotification("STOPPING=1"))
        var relayed: [Int] = []
        for client in clients {
            let (tail, total) = try await client.value
            relayed.append(total)
            let events = RawAnswer(text: tail).dataEvents
            let last = try? JSONValue(parsing: Array((events.last ?? "").utf8))
            #expect(last?["error"]?["code"]?.stringValue == "shutting_down", "\(tail.suffix(300))")
            #expect(tail.hasSuffix("\r\n0\r\n\r\n"))
        }
        print("\(streams) firehoses: ended \(ContinuousClock.now - signalled) after SIGTERM (drain_timeout 2s), bytes relayed each: \(relayed)")
        #expect(upstream.count("finished:loop-firehose") == 0, "ended by the drain, not by the upstream")
        #expect(try await gateway.stop() == 0)
    }

    @Test("SIGHUP every second while 20 clients keep asking: every reload happens, no request fails")
    func reloadEverySecondUnderLoad() async throws {
        let upstream = try await LoopbackUpstream.start()
        defer { Task { await upstream.stop() } }
        let directory = try TestPaths.temporaryDirectory("sighup-load")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ledger = directory + "/usage.jsonl"
        let gateway = try await GatewayProcess.start(config: Self.config(loopbackPort: upstream.port, ledger: ledger))
        let socket = gateway.socketPath
        let load = LoadCounters()
        // Each client asks again as soon as it has its answer, on a new connection each
        // time; half go through the loopback provider, half replay a cassette.
        let clients = (0..<20).map { client in
            Task {
                try await onOwnThread { () -> [String] in
                    let model = client.isMultiple(of: 2) ? "loop-seed" : "grok-4-fast"
                    let request = RawUnixClient.post("/v1/chat/completions", json: GatewayEndToEndTests.chatBody(model: model, stream: true))
                    var failures: [String] = []
                    while !load.stop.load(ordering: .relaxed) {
                        let answer = RawAnswer(text: try RawUnixClient.exchangeAll([request], socketPath: socket, timeoutSeconds: 30)[0])
                        if answer.status != 200 || answer.dataEvents.last != "[DONE]" || !answer.isComplete {
                            failures.append(String(answer.text.prefix(300)))
                        }
                        load.answered.add(1, ordering: .relaxed)
                    }
                    return failures
                }
            }
        }
        // Ten reloads, one a second: the schedule is the load, so a timer is right here.
        // Each is confirmed the way systemd sees it, RELOADING=1 then READY=1.
        let clock = ContinuousClock()
        var tick = clock.now
        var confirmed = 0
        var answeredAtReload: [Int] = []
        for _ in 0..<10 {
            tick = tick.advanced(by: .seconds(1))
            try await clock.sleep(until: tick)
            answeredAtReload.append(load.answered.load(ordering: .relaxed))
            gateway.signal(SIGHUP)
            if try await gateway.waitForNotification("READY=1") { confirmed += 1 }
        }
        load.stop.store(true, ordering: .relaxed)
        var failures: [String] = []
        for client in clients { failures += try await client.value }
        let total = load.answered.load(ordering: .relaxed)
        print("SIGHUP every second: \(confirmed) reloads confirmed, \(total) requests answered, \(failures.count) failed; answered before each reload: \(answeredAtReload)")
        #expect(confirmed == 10)
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        #expect(total >= 20)
        #expect(answeredAtReload.last! > answeredAtReload.first!, "requests were answered while the reloads went on")
        let received = gateway.notifySocket.received
        #expect(received.filter { $0.split(separator: "\n").contains("RELOADING=1") }.count == 10)
        #expect(gateway.log.components(separatedBy: "configuration reloaded").count - 1 == 10)
        #expect(try await gateway.stop() == 0)
        let records = try ledgerRecords(ledger)
        #expect(records.count == total, "one record per request")
        #expect(records.allSatisfy { $0["status"]?.intValue == 200 && $0["error"] == .null })
    }
}

/// What the looping clients share with the test: when to stop, and how many answers came.
private final class LoadCounters: Sendable {
    let stop = Atomic<Bool>(false)
    let answered = Atomic<Int>(0)
}
