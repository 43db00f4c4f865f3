import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RelayCore
import Synchronization

/// One `POST /v1/chat/completions` from arrival to its usage record.
///
/// It reads and validates the body, routes the model, runs the pipeline and writes the
/// response. The response head waits for the commit point (the first event that carries
/// content, or a heartbeat): until then any failure is still a clean HTTP error. After it,
/// a failure ends the stream with one OpenAI-style error event and no `[DONE]`.
///
/// The whole exchange runs under Hummingbird's inbound-close watch: a client that hangs up
/// cancels this task, which cancels the upstream request at once.
struct ChatExchange {
    let gateway: Gateway
    let request: Request
    let channel: any Channel

    /// Events held before the head is sent; past this many the head goes out anyway.
    static let maximumHeldEvents = 1024

    func run(slot: ResponseWriterSlot) async throws {
        let runtime = self.gateway.currentRuntime
        let caller = await PeerCredentials.read(from: self.channel)
        let (record, log) = self.begin(caller: caller)
        do {
            try await self.cancellingIfClientCloses {
                try await self.exchange(body: self.request.body, slot: slot, runtime: runtime, record: record, log: log)
            }
        } catch {
            await self.fail(with: error, slot: slot, record: record, runtime: runtime, logger: log.logger)
        }
        self.complete(record, runtime: runtime, logger: log.logger)
    }

    /// The request's id, record and logger. (The synchronous parts of `run` are kept out
    /// of it, here and in `fail`, so that its async frame, held by every request for as
    /// long as it lasts, stays small.)
    @inline(never)
    private func begin(caller: CallerIdentity?) -> (RequestRecord, RequestLog) {
        let requestID = Self.makeRequestID()
        let log = RequestLog(self.gateway.logger)
        // Room first for the fields a request adds (id, caller, rule, model, upstream: ten
        // to thirteen): one at a time, the handler's dictionary grew and rehashed five
        // times. Twelve, not more: the dictionary lives as long as the stream, and room for
        // sixteen doubled its table (2 KB a stream; 1 KB with twelve).
        var metadata = log.logger.handler.metadata
        metadata.reserveCapacity(metadata.count + 12)
        metadata["request_id"] = .string(requestID)
        if let caller { metadata.annotate(caller: caller) }
        log.logger.handler.metadata = metadata
        let record = RequestRecord(UsageRecord(requestID: requestID, requestedModel: "", upstream: "", stream: false, caller: caller))
        self.gateway.statistics.requestsTotal.add(1, ordering: .relaxed)
        return (record, log)
    }

    /// Ends a request that failed: the record of why, and an OpenAI-style error if nothing
    /// was written yet and the client may still be there.
    @inline(never)
    private func fail(with error: any Error, slot: ResponseWriterSlot, record: RequestRecord, runtime: GatewayRuntime, logger: Logger) async {
        let responseStarted = !slot.isUnused
        if Self.clientLeft(after: error, responseStarted: responseStarted, cancelled: Task.isCancelled) {
            record.update { $0.clientDisconnected = true }
        }
        guard !responseStarted else { return }
        // Nothing has been written: the client may still be there to hear why.
        let relayError = (error as? RelayError) ?? .internalError("The request failed inside the gateway.")
        record.update { $0.status = relayError.status.code; $0.error = relayError.message }
        // Recorded before the answer, as a response that succeeded is: a client that has its
        // 403 can count on the ledger line (a test that read the ledger then raced it).
        self.complete(record, runtime: runtime, logger: logger)
        if !(error is CancellationError), let writer = slot.take() {
            try? await HTTPRequestHandler.write(error: relayError, to: writer)
        }
    }

    /// Whether a request that ended with `error` ended because the client left: its hang-up
    /// was seen (the task was cancelled), or the response had started. After the response
    /// head only writes to the client throw (an upstream failure ends the stream with an
    /// error event instead), and a write can fail on a closed connection before the close
    /// itself is seen: the soak caught 2 hang-ups in 5,000 recorded as completed streams.
    static func clientLeft(after error: any Error, responseStarted: Bool, cancelled: Bool) -> Bool {
        error is CancellationError || cancelled || responseStarted
    }

    /// Runs `operation`, cancelled if the client closes its end of the connection first.
    ///
    /// (Not HummingbirdCore's `consumeWithCancellationOnInboundClose`: it closes the
    /// connection after every response and can swallow the next request's head on a
    /// kept-alive one.) Before the stream starts nothing is written, so a write error
    /// cannot tell that the client has gone; the close event from the pipeline does. The
    /// operation runs in a task of its own, which the connection's watch cancels: a
    /// callback rather than a second task waiting for the close, which held memory for
    /// every stream. That task, and the stream's other tasks, run on the connection's event
    /// loop (see ``EventLoopTaskExecutor`` for why).
    private func cancellingIfClientCloses(_ operation: @escaping @Sendable () async throws -> Void) async throws {
        let channel = self.channel
        let loopExecutor = self.gateway.loopExecutors.executor(for: channel.eventLoop)
        let task = StreamTasks.$executor.withValue(loopExecutor) { StreamTasks.start { try await operation() } }
        // Registered without waiting for the loop: a close seen before the registration runs
        // calls back at once, and the loop runs the removal after it (both are queued on it,
        // in order, or both done at once when this runs on the loop, as a connection's task
        // does: a task of the loop each cost about 1,500 instructions), so a kept-alive
        // connection's next request never meets this callback. A pipeline without the watch
        // has been torn down: the client went before the registration ran (a loaded CI
        // machine showed it: the retries ran on for a client long gone).
        Self.onLoop(of: channel) {
            guard let watch = try? channel.pipeline.syncOperations.handler(type: ClientWatchHandler.self) else {
                task.cancel()
                return
            }
            watch.watchClose { task.cancel() }
        }
        defer {
            Self.onLoop(of: channel) { try? channel.pipeline.syncOperations.handler(type: ClientWatchHandler.self).unwatchClose() }
        }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    /// Runs `body` on `channel`'s event loop: now if this is the loop, else queued on it.
    private static func onLoop(of channel: any Channel, _ body: @escaping @Sendable () -> Void) {
        if channel.eventLoop.inEventLoop {
            body()
        } else {
            channel.eventLoop.execute(body)
        }
    }

    /// Writes the request's record: the journal entry, the ledger line, the metrics. Called
    /// just before the response's last bytes go out, an error's too (so a client that has
    /// seen the end can count on the record), or at the end for requests whose client left;
    /// once either way.
    private func complete(_ record: RequestRecord, runtime: GatewayRuntime, logger: Logger) {
        var alreadyDone = false
        record.update {
            alreadyDone = $0.totalTime != nil
            if !alreadyDone { $0.totalTime = record.elapsed() }
        }
        guard !alreadyDone else { return }
        let finished = record.snapshot
        if !finished.upstream.isEmpty, finished.attempts > 0 {
            let healthy = finished.status < 500 && (finished.error == nil || finished.clientDisconnected)
            self.gateway.statistics.noteUpstream(finished.upstream, healthy: healthy, detail: finished.status >= 500 ? "\(finished.status)" : "stream error")
        }
        Self.log(finished, logger: logger)
        runtime.ledger?.append(finished)
        self.gateway.callerGate.finish(finished)
        let modelLabel = runtime.router.route(for: finished.requestedModel) == nil ? "unknown" : HTTPRequestHandler.printable(finished.requestedModel, limit: 64)
        self.gateway.metrics.record(finished, modelLabel: modelLabel)
    }

    private func exchange(
        body: RequestBody,
        slot: ResponseWriterSlot,
        runtime: GatewayRuntime,
        record: RequestRecord,
        log: RequestLog
    ) async throws {
        // Everything up to the commit point runs in a child task, whose memory goes when it
        // ends (see StreamTasks.inChildTask): this task then holds only what writing needs.
        let opening = try await StreamTasks.inChildTask {
            try await self.open(body: body, runtime: runtime, record: record, log: log)
        }
        let logger = log.logger
        // Consumed: the events held before the commit point are owned by `held` alone, which
        // `writeStream` empties once they are written.
        switch consume opening {
        case .whole(let response, let buffer):
            try await self.writeWhole(response, body: buffer, slot: slot, record: record, runtime: runtime, logger: logger)
        case .stream(let response, var held, let rest, let failure):
            self.gateway.statistics.activeStreams.add(1, ordering: .relaxed)
            defer { self.gateway.statistics.activeStreams.subtract(1, ordering: .relaxed) }
            try await self.writeStream(
                response, held: &held, rest: rest?.iterator, failure: failure, slot: slot, record: record, runtime: runtime, logger: logger
            )
        }
    }

    /// Reads and validates the body, routes the model, runs the pipeline, and for a stream
    /// pulls events up to the commit point: all that comes before a byte is written.
    private func open(
        body: RequestBody,
        runtime: GatewayRuntime,
        record: RequestRecord,
        log: RequestLog
    ) async throws -> ResponseOpening {
        let limit = runtime.config.server.maxRequestBody.bytes
        let bytes: ByteBuffer
        do {
            bytes = try await body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw RelayError.bodyTooLarge(limit: limit)
        } catch let error as CancellationError {
            throw error
        } catch {
            // NIO's parser refused the body's framing (a bad chunk size; the client ended
            // its side before Content-Length bytes came): the client's fault, not ours.
            throw RelayError.unreadableBody(HTTPRequestHandler.printable("\(error)"))
        }
        var chat = try ChatRequest(body: bytes)
        guard let route = runtime.router.route(for: chat.model) else {
            throw RelayError.modelNotFound(HTTPRequestHandler.printable(chat.model))
        }
        // In place: the request's log is the only holder of its metadata until here, so the
        // two fields do not copy it (every stream would keep both copies to its end).
        log.logger[metadataKey: "model"] = .string(HTTPRequestHandler.printable(chat.model))
        log.logger[metadataKey: "upstream"] = .string(route.upstreamName)
        record.update {
            $0.requestedModel = chat.model
            $0.upstream = route.upstreamName
            $0.stream = chat.stream
        }
        // The policy: may this caller use this model, now? (Released in `complete`.)
        try self.gateway.callerGate.admit(
            model: chat.model, caller: record.snapshot.caller, requestID: record.snapshot.requestID, config: runtime.config, logger: &log.logger
        )
        chat.setUpstreamModel(route.upstreamModel)
        let context = StageContext(
            requestID: record.snapshot.requestID,
            requestedModel: chat.model,
            upstreamName: route.upstreamName,
            caller: record.snapshot.caller,
            logger: log.logger,
            record: record,
            fallbacks: route.fallbacks
        )
        let response: ChatResponse
        do {
            response = try await route.handler(chat, context)
        } catch let error as RelayError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw OpenAICompatibleUpstream.relayError(for: error, upstream: route.upstreamName)
        }
        switch response.body {
        case .whole(let buffer):
            return .whole(response, buffer)
        case .events(let events):
            // Hold the head back until the commit point: a failure before it is a clean HTTP error.
            var iterator = events.makeAsyncIterator()
            var held: [StreamEvent] = []
            while true {
                guard let event = try await iterator.next() else { return .stream(response, held: held, rest: nil, failure: nil) }
                held.append(event)
                if event.commits || event.kind == .heartbeat || held.count >= Self.maximumHeldEvents { break }
            }
            switch Self.takeReady(from: &iterator, into: &held) {
            case .more:
                return .stream(response, held: held, rest: HandedOverIterator(iterator: iterator), failure: nil)
            case .ended:
                return .stream(response, held: held, rest: nil, failure: nil)
            case .failed(let error):
                return .stream(response, held: held, rest: nil, failure: Relay.relayError(error, upstream: route.upstreamName))
            }
        }
    }

    /// The relay of an exchange's stream.
    typealias Relay = StreamRelay<EventStream.Iterator>

    /// What ``takeReady(from:into:)`` found behind the events it took.
    enum ReadyRest {
        /// More may come: the relay goes on with the iterator.
        case more
        /// The stream ended.
        case ended
        /// The stream failed (after the commit point: an error event ends it).
        case failed(any Error)
    }

    /// Takes the events the layers beneath have ready behind the commit point, as a round of
    /// the relay would (at most ``StreamRelay/eventsPerYield`` events, about
    /// ``StreamRelay/batchBytes`` bytes), so that they go out with the head in one write.
    /// A response that came in whole, as short ones do, then needs no relay task at all:
    /// its head, events and end are two writes instead of three, and the relay's task, its
    /// drain registration and its stall watch are not made (a one-chunk request: −4%
    /// instructions at 32 streams).
    static func takeReady(from iterator: inout EventStream.Iterator, into held: inout [StreamEvent]) -> ReadyRest {
        guard iterator.canBeReady else { return .more }
        var taken = 0
        var bytes = 0
        while taken < Relay.eventsPerYield, bytes < Relay.batchBytes {
            do {
                switch try iterator.nextIfReady() {
                case .element(let event):
                    bytes += event.bytes.readableBytes
                    taken += 1
                    held.append(event)
                case .end:
                    return .ended
                case .deadlinePassed:
                    return .more
                }
            } catch {
                return .failed(error)
            }
        }
        return .more
    }

    @inline(never)
    private func writeWhole(
        _ response: ChatResponse,
        body: ByteBuffer,
        slot: ResponseWriterSlot,
        record: RequestRecord,
        runtime: GatewayRuntime,
        logger: Logger
    ) async throws {
        var head = HTTPResponse(status: response.status)
        head.headerFields = response.headerFields
        head.headerFields[.contentLength] = String(body.readableBytes)
        head.headerFields[Self.requestIDField] = record.snapshot.requestID
        head.headerFields[Self.upstreamField] = record.snapshot.upstream
        if response.status.kind == .successful, let json = try? JSONValue(parsing: body.readableBytesView) {
            record.update {
                $0.servedModel = json["model"]?.stringValue
                $0.finishReason = json["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue
            }
        }
        record.update {
            $0.status = response.status.code
            $0.timeToFirstByte = record.elapsed()
        }
        guard let writer = slot.take() else { return }
        self.complete(record, runtime: runtime, logger: logger)
        try await writer.write(response: head, body: ResponseBody(byteBuffer: body))
    }

    private func writeStream(
        _ response: ChatResponse,
        held: inout [StreamEvent],
        rest iterator: EventStream.Iterator?,
        failure openingFailure: RelayError?,
        slot: ResponseWriterSlot,
        record: RequestRecord,
        runtime: GatewayRuntime,
        logger: Logger
    ) async throws {
        // The head, the events and the end all go through `events`, which writes the head
        // with the first events (see StreamBodyWriter); Hummingbird's writer is not used.
        guard slot.take() != nil else { return }
        let events = StreamBodyWriter(channel: self.channel, head: Self.streamHead(response, record: record))
        record.update { $0.status = response.status.code }
        let tally = StreamTally(record: record)
        var sent: Int {
            get { tally.sent }
            set { tally.sent = newValue }
        }
        // At once: `held` is everything ready (see takeReady(from:into:)), and the relay, if
        // any, starts only after this.
        try await events.write(contentsOf: Self.bytes(of: held, noting: tally), atOnce: true)
        record.update { $0.timeToFirstByte = record.elapsed() }
        // Let go once written: kept, they held their reads' storage (the first read, head
        // and all) for as long as the stream lasts.
        held = []
        var failure = openingFailure
        if let iterator {
            let relay = self.startRelay(iterator: iterator, events: events, tally: tally, record: record, runtime: runtime)
            defer { relay.stopWatching() }
            let outcome: StreamRelayOutcome
            do {
                outcome = try await withTaskCancellationHandler { try await relay.task.value } onCancel: { relay.task.cancel() }
            } catch {
                guard let reason = relay.interruption.reason else {
                    // The client left: its record still says how many events went out.
                    record.update { $0.eventsSent = sent }
                    throw error
                }
                outcome = reason
            }
            if case .clientStalled = outcome { Self.noteStalled(record: record, writeTimeout: relay.writeTimeout, logger: logger) }
            switch outcome {
            case .finished: break
            case .failed(let error): failure = error
            case .drained: failure = .shuttingDown()
            case .clientStalled:
                record.update { $0.eventsSent = sent }
                self.complete(record, runtime: runtime, logger: logger)
                throw CancellationError()
            }
        }
        if let failure {
            record.update { $0.error = failure.message }
            try await events.write(failure.sseEvent)
            sent += 1
        }
        record.update { $0.eventsSent = sent }
        self.complete(record, runtime: runtime, logger: logger)
        try await events.finish()
    }

    /// The events' bytes, each event noted: an array, which the writer walks twice (to size
    /// its buffer, then to fill it).
    private static func bytes(of held: [StreamEvent], noting tally: StreamTally) -> [ByteBuffer] {
        var parts: [ByteBuffer] = []
        parts.reserveCapacity(held.count)
        // Read in place: `for event in held` copied each event out (a retain and a release
        // of each of its references) to look at it once.
        for index in held.indices {
            tally.note(held[index])
            parts.append(held[index].bytes)
        }
        return parts
    }

    /// The head of a streamed response.
    @inline(never)
    private static func streamHead(_ response: ChatResponse, record: RequestRecord) -> HTTPResponse {
        var head = HTTPResponse(status: response.status)
        head.headerFields = response.headerFields
        head.headerFields[.contentType] = "text/event-stream; charset=utf-8"
        head.headerFields[.cacheControl] = "no-cache"
        head.headerFields[Self.requestIDField] = record.snapshot.requestID
        head.headerFields[Self.upstreamField] = record.snapshot.upstream
        return head
    }

    /// Starts relaying the rest of a stream in a task of its own, which ends with the
    /// stream, or when the drain time after SIGTERM is over, or when the client has taken
    /// nothing for write_timeout: those two cancel it (callbacks, not tasks that wait) while
    /// the exchange still writes the end.
    @inline(never)
    private func startRelay(
        iterator: EventStream.Iterator,
        events: StreamBodyWriter,
        tally: StreamTally,
        record: RequestRecord,
        runtime: GatewayRuntime
    ) -> RunningRelay {
        let relay = StreamRelay(iterator: iterator, writer: events, tally: tally)
        let upstream = record.snapshot.upstream
        let relayTask = StreamTasks.start { try await relay.run(upstream: upstream) }
        let interruption = StreamInterruption()
        let drain = self.gateway.drain
        let drainRegistration = drain.onFire {
            interruption.note(.drained)
            relayTask.cancel()
        }
        let writeTimeout = runtime.config.server.writeTimeout.duration
        let channel = self.channel
        events.watchForStalls(timeout: writeTimeout) {
            // A write waiting on a client that does not read does not end by
            // cancellation alone: closing the connection fails it.
            interruption.note(.clientStalled)
            relayTask.cancel()
            channel.close(promise: nil)
        }
        return RunningRelay(task: relayTask, interruption: interruption, writeTimeout: writeTimeout) {
            drain.forget(drainRegistration)
            events.stopWatchingForStalls()
        }
    }

    @inline(never)
    private static func noteStalled(record: RequestRecord, writeTimeout: Duration, logger: Logger) {
        logger.warning(
            "dropped a stream: the client took none of it for write_timeout",
            metadata: ["write_timeout_ms": "\(writeTimeout.components.seconds * 1000 + writeTimeout.components.attoseconds / 1_000_000_000_000_000)"]
        )
        record.update {
            $0.error = "the client stopped reading"
            $0.clientDisconnected = true
        }
    }

    static let requestIDField = HTTPField.Name("x-request-id")!
    /// Which upstream served the response (after retries and fallbacks).
    static let upstreamField = HTTPField.Name("x-chatrelay-upstream")!

    /// A request id: unique in the process, and not guessable from the ones before it.
    ///
    /// Each used to take two `getrandom` system calls. Now a random key chosen at start
    /// and a counter go through splitmix64's finaliser (a bijection of 64-bit integers),
    /// so no two requests of a process share an id; 16 more random bits of the key keep
    /// ids of different runs apart.
    static func makeRequestID() -> String {
        let count = Self.requestCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        var mixed = Self.requestIDKey.counter &+ UInt64(truncatingIfNeeded: count) &* 0x9E37_79B9_7F4A_7C15
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        mixed ^= mixed >> 31
        return Self.requestID(mixed, suffix: Self.requestIDKey.suffix)
    }

    /// `req_`, then `mixed` and `suffix` in lowercase hex without leading zeros. Written by
    /// hand: two `String(_:radix:)` and two concatenations cost about 2,900 instructions a
    /// request.
    static func requestID(_ mixed: UInt64, suffix: UInt64) -> String {
        String(unsafeUninitializedCapacity: 40) { buffer in
            let digits: StaticString = "0123456789abcdef"
            var count = 0
            func put(_ byte: UInt8) {
                buffer[count] = byte
                count += 1
            }
            for byte in "req_".utf8 { put(byte) }
            func putHex(_ value: UInt64) {
                var shift = max(0, (64 - value.leadingZeroBitCount + 3) / 4 * 4 - 4)
                while shift >= 0 {
                    put(digits.utf8Start[Int((value >> UInt64(shift)) & 0xF)])
                    shift -= 4
                }
            }
            putHex(mixed)
            putHex(suffix)
            return count
        }
    }

    private static let requestCounter = Atomic<Int>(0)
    private static let requestIDKey: (counter: UInt64, suffix: UInt64) = {
        var generator = SystemRandomNumberGenerator()
        return (generator.next(), generator.next() & 0xFFFF)
    }()

    /// Seconds as milliseconds with one decimal ("105.5"), without Foundation's `String(format:)`,
    /// which cost 2% of the CPU of a one-chunk request.
    static func milliseconds(_ seconds: Double) -> String {
        let tenths = Int((seconds * 10_000).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// The request's journal entry: one readable line, and every field of the record.
    static func log(_ record: UsageRecord, logger: Logger) {
        // Room for every field at once: grown from a literal's nine, the dictionary rehashed
        // them all on the way to twenty.
        var metadata = Logger.Metadata(minimumCapacity: 24)
        metadata["message_id"] = .string(LogMessageID.requestCompleted)
        metadata["status"] = .stringConvertible(record.status)
        metadata["stream"] = .stringConvertible(record.stream)
        metadata["total_ms"] = .string(Self.milliseconds(record.totalTime ?? 0))
        metadata["events_received"] = .stringConvertible(record.eventsReceived)
        metadata["events_sent"] = .stringConvertible(record.eventsSent)
        metadata["empty_chunks_dropped"] = .stringConvertible(record.emptyChunksDropped)
        metadata["heartbeats_sent"] = .stringConvertible(record.heartbeatsSent)
        metadata["attempts"] = .stringConvertible(record.attempts)
        if let model = record.servedModel { metadata["served_model"] = .string(HTTPRequestHandler.printable(model)) }
        if let reason = record.finishReason { metadata["finish_reason"] = .string(HTTPRequestHandler.printable(reason)) }
        if let error = record.error { metadata["error"] = .string(error) }
        if let ttfb = record.timeToFirstByte { metadata["ttfb_ms"] = .string(Self.milliseconds(ttfb)) }
        if let ttfc = record.timeToFirstContent { metadata["ttfc_ms"] = .string(Self.milliseconds(ttfc)) }
        if record.clientDisconnected { metadata["client_disconnected"] = "true" }
        if !record.moderation.isEmpty { metadata["moderation"] = .string(record.moderation.map(\.summary).joined(separator: "; ")) }
        let tokens = record.tokens
        for (key, value) in [("prompt_tokens", tokens.prompt), ("completion_tokens", tokens.completion), ("reasoning_tokens", tokens.reasoning),
                             ("cached_prompt_tokens", tokens.cachedPrompt), ("total_tokens", tokens.total)] {
            if let value { metadata[key] = .stringConvertible(value) }
        }
        if let caller = record.caller { metadata["caller_gid"] = .stringConvertible(caller.gid) }
        var line = "request \(record.clientDisconnected ? "ended (client disconnected)" : "completed"): "
        line += "\(HTTPRequestHandler.printable(record.requestedModel.isEmpty ? "-" : record.requestedModel)) via \(record.upstream.isEmpty ? "-" : record.upstream), "
        line += "status \(record.status)"
        if let reason = record.finishReason { line += ", \(HTTPRequestHandler.printable(reason))" }
        if let prompt = tokens.prompt, let completion = tokens.completion { line += ", \(prompt)+\(completion) tokens" }
        line += ", \(Int(((record.totalTime ?? 0) * 1000).rounded())) ms"
        logger.info("\(line)", metadata: metadata)
    }
}

/// Pulls events and writes them to the client until the stream ends; run in a task of its
/// own, so that the drain and the write-stall watch can cancel it.
final class StreamRelay<Iterator: ReadyIterator>: @unchecked Sendable where Iterator.Element == StreamEvent {
    /// Pulled by ``run(upstream:)`` alone (see ``IteratorBox`` for why unchecked).
    @exclusivity(unchecked) private var iterator: Iterator
    let writer: StreamBodyWriter
    private let tally: StreamTally

    /// Events relayed between two yields of the thread (see ``run(upstream:)``); also the
    /// most one batch holds. A yield on a loop's executor runs a whole loop tick: one every
    /// 16 events cost 4 to 6% of a 50-chunk stream's instructions at concurrency 1.
    static var eventsPerYield: Int { 64 }
    /// A batch takes no more ready events once it holds this many bytes: with the writer's
    /// budget, what a stream holds stays bounded however large its events are.
    static var batchBytes: Int { StreamBodyWriter.budget / 2 }

    init(iterator: Iterator, writer: StreamBodyWriter, tally: StreamTally) {
        self.iterator = iterator
        self.writer = writer
        self.tally = tally
    }

    /// Upstream failures come back as `.failed`; a client that is gone throws.
    ///
    /// Each round waits for one event (`next`), then takes the events the layers beneath
    /// have ready behind it (`nextIfReady`, no async call each) and writes them together.
    func run(upstream: String) async throws -> StreamRelayOutcome {
        let takesReady = self.iterator.canBeReady
        var batch: [ByteBuffer] = []
        var sinceYield = 0
        while true {
            // Held across the write, in the frame the relay task keeps for the whole stream:
            // an error's one reference, not a RelayError (a larger frame cost every held
            // stream another slab, about 1 KB).
            var end = RoundEnd.more
            do {
                guard let event = try await self.iterator.next() else { return .finished }
                self.tally.note(event)
                batch.append(event.bytes)
                if takesReady, try self.takeReady(into: &batch) { end = .finished }
            } catch {
                end = error is CancellationError || Task.isCancelled ? .cancelled : .failed(error)
            }
            // What was taken (and counted as sent) goes out before the end: a failure or the
            // drain's error event ends the stream after it.
            // With ready paths beneath, a round holds everything ready: flushed at once.
            try await self.writer.write(contentsOf: batch, atOnce: takesReady)
            sinceYield += batch.count
            batch.removeAll(keepingCapacity: true)
            switch end {
            case .more: break
            case .finished: return .finished
            case .cancelled: throw CancellationError()
            case .failed(let error): return .failed(Self.relayError(error, upstream: upstream))
            }
            // When the upstream always has the next event ready and the client's socket always
            // has room, neither call above suspends, and this loop would keep its thread of
            // Swift's cooperative pool (one per core) for the whole stream: a few such streams
            // starved every other request, and the drain signal, until they ended. Yielding
            // now and then lets them run; checking cancellation ends the loop when the drain
            // cancels it.
            if sinceYield >= Self.eventsPerYield {
                sinceYield = 0
                await Task.yield()
                try Task.checkCancellation()
            }
        }
    }

    /// How one round of ``run(upstream:)`` ended.
    private enum RoundEnd {
        case more
        case finished
        case cancelled
        case failed(any Error)
    }

    @inline(never)
    static func relayError(_ error: any Error, upstream: String) -> RelayError {
        (error as? RelayError) ?? OpenAICompatibleUpstream.relayError(for: error, upstream: upstream)
    }

    /// Takes ready events into `batch` until it is full (``eventsPerYield`` events or
    /// ``batchBytes`` bytes) or none is ready; true if the stream ended.
    private func takeReady(into batch: inout [ByteBuffer]) throws -> Bool {
        var bytes = batch.first?.readableBytes ?? 0
        while batch.count < Self.eventsPerYield, bytes < Self.batchBytes {
            switch try self.iterator.nextIfReady() {
            case .element(let event):
                self.tally.note(event)
                bytes += event.bytes.readableBytes
                batch.append(event.bytes)
            case .end:
                return true
            case .deadlinePassed:
                return false
            }
        }
        return false
    }
}

/// A stream's relay task and what may interrupt it (see ``ChatExchange/startRelay``).
private struct RunningRelay: Sendable {
    let task: Task<StreamRelayOutcome, any Error>
    let interruption: StreamInterruption
    let writeTimeout: Duration
    /// Forgets the drain registration and stops the write-stall watch.
    let stopWatching: @Sendable () -> Void
}

/// Why a stream's relay was cancelled while the client was still there, if it was.
final class StreamInterruption: Sendable {
    private let state = Mutex<StreamRelayOutcome?>(nil)

    /// The first reason noted wins.
    func note(_ reason: StreamRelayOutcome) {
        self.state.withLock { if $0 == nil { $0 = reason } }
    }

    var reason: StreamRelayOutcome? { self.state.withLock { $0 } }
}

/// How relaying a stream ended.
enum StreamRelayOutcome: Sendable {
    case finished
    case failed(RelayError)
    case drained
    /// The client took none of the stream for `write_timeout`.
    case clientStalled
}

/// What an exchange has before it writes anything: the response, and for a stream the
/// events up to the commit point and the iterator for the rest (nil if the stream ended).
private enum ResponseOpening: Sendable {
    case whole(ChatResponse, ByteBuffer)
    /// `rest` nil: the stream ended with `held`, or failed after them (`failure`).
    case stream(ChatResponse, held: [StreamEvent], rest: HandedOverIterator?, failure: RelayError?)
}

/// An event iterator passed from the task that started pulling it to the one that goes on:
/// one task pulls it at a time, the first having ended before the second begins.
private struct HandedOverIterator: @unchecked Sendable {
    let iterator: EventStream.Iterator
}

/// The request's logger, which gains fields (model, upstream, policy) as the exchange learns
/// them. One box instead of copies handed through the tasks: a copy of a `Logger` shares its
/// metadata, so adding a field to one of several copies copied all of it, and a stream kept
/// both for its whole length. Touched by one task at a time: `run` waits for the exchange
/// task, the exchange for the child task that opens the request.
private final class RequestLog: @unchecked Sendable {
    var logger: Logger

    init(_ logger: Logger) {
        self.logger = logger
    }
}

/// What a stream's events tell as they go to the client: how many were sent, and the
/// served model, the finish reason and the time to the first content, which go to the
/// record the first time an event carries them. Touched by one task at a time: the exchange,
/// then the relay task, which the exchange waits for.
///
/// A final class, not a closure: a closure's call copied the event it was given (a retain
/// and a release of each of its references), and the record was locked for every event.
final class StreamTally: @unchecked Sendable {
    private let record: RequestRecord
    // Unchecked: one task at a time (above), and each access checked at run time cost a
    // call into the runtime, four for every event.
    @exclusivity(unchecked) var sent = 0
    @exclusivity(unchecked) private var modelNoted = false
    @exclusivity(unchecked) private var finishReasonNoted = false
    @exclusivity(unchecked) private var firstContentSeen = false

    init(record: RequestRecord) {
        self.record = record
    }

    /// Inlined: a call copied the event it was given, out of the array or the relay's
    /// batch; inlined, only the fields it reads are read.
    @inline(__always)
    func note(_ event: StreamEvent) {
        self.sent += 1
        guard let facts = event.facts else { return }
        let model = self.modelNoted ? nil : facts.model
        let finishReason = self.finishReasonNoted ? nil : facts.finishReason
        let firstContent = !self.firstContentSeen && facts.carriesContent
        guard model != nil || finishReason != nil || firstContent else { return }
        self.learn(model: model, finishReason: finishReason, firstContent: firstContent)
    }

    /// What an event tells for the first time, to the record.
    @inline(never)
    private func learn(model: String?, finishReason: String?, firstContent: Bool) {
        let record = self.record
        record.update {
            if let model, $0.servedModel == nil { $0.servedModel = model }
            if let finishReason, $0.finishReason == nil { $0.finishReason = finishReason }
            if firstContent { $0.timeToFirstContent = record.elapsed() }
        }
        if model != nil { self.modelNoted = true }
        if finishReason != nil { self.finishReasonNoted = true }
        if firstContent { self.firstContentSeen = true }
    }
}

/// Holds the response writer until someone writes the head; `~Copyable` values cannot be
/// captured by the closures the exchange runs in, so it lives here.
final class ResponseWriterSlot: @unchecked Sendable {
    private var writer: ResponseWriter?

    init(_ writer: consuming ResponseWriter) {
        self.writer = consume writer
    }

    var isUnused: Bool { self.writer != nil }

    func take() -> ResponseWriter? {
        self.writer.take()
    }
}
