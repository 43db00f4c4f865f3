import HTTPTypes
import Logging
import NIOCore
import Synchronization
import Testing

@testable import RelayCore

/// A thread-safe list of what happened, in order.
private final class Trace: Sendable {
    private let entries = Mutex<[String]>([])
    func add(_ entry: String) { self.entries.withLock { $0.append(entry) } }
    var all: [String] { self.entries.withLock { $0 } }
}

/// A value behind a lock, shareable by escaping closures.
private final class Locked<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result { self.value.withLock { body(&$0) } }
}

/// Writes down when the request passes in and the response passes out.
private struct TracingStage: StreamStage {
    let name: String
    let trace: Trace

    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        self.trace.add("\(self.name) in: \(request.json["model"]?.stringValue ?? "?")")
        var response = try await next(request, context)
        self.trace.add("\(self.name) out")
        response.headerFields.append(HTTPField(name: HTTPField.Name("x-stages")!, value: self.name))
        return response
    }
}

/// Rewrites the model on the way in.
private struct RenamingStage: StreamStage {
    let model: String
    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        var request = request
        request.setUpstreamModel(self.model)
        return try await next(request, context)
    }
}

/// Answers without calling `next`.
private struct ShortCircuitStage: StreamStage {
    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        ChatResponse(error: .modelNotFound(request.model))
    }
}

/// Calls `next` again when the first answer is an error (a retry).
private struct RetryOnceStage: StreamStage {
    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        let first = try await next(request, context)
        guard first.status.kind != .successful else { return first }
        return try await next(request, context)
    }
}

/// Wraps the event stream and writes down each event as it is pulled through.
private struct CountingStage: StreamStage {
    let trace: Trace
    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        var response = try await next(request, context)
        guard case .events(let events) = response.body else { return response }
        let trace = self.trace
        response.body = .events(EventStream(events.map { @Sendable event in
            trace.add("saw \(event.kind)")
            return event
        }))
        return response
    }
}

@Suite("Pipeline folding and the stage registry")
struct PipelineTests {
    static func request(model: String = "grok-4-fast") throws -> ChatRequest {
        try ChatRequest(body: ByteBuffer(string: #"{"model":"\#(model)","messages":[{"role":"user","content":"hi"}],"stream":true}"#))
    }

    static func context() -> StageContext {
        StageContext(
            requestID: "t", requestedModel: "grok-4-fast", upstreamName: "rec", logger: Logger(label: "test"),
            record: RequestRecord(UsageRecord(requestID: "t", requestedModel: "grok-4-fast", upstream: "rec", stream: true, caller: nil)))
    }

    static func okResponse(_ text: String = "ok") -> ChatResponse {
        ChatResponse(status: .ok, body: .whole(ByteBuffer(string: text)))
    }

    @Test("Stages fold in order: the outermost sees the request first and the response last")
    func foldOrder() async throws {
        let trace = Trace()
        let pipeline = Pipeline(stages: ["a", "b", "c"].map { TracingStage(name: $0, trace: trace) })
        let handler = pipeline.handler { request, _ in
            trace.add("upstream")
            return Self.okResponse()
        }
        let response = try await handler(try Self.request(), Self.context())
        #expect(trace.all == ["a in: grok-4-fast", "b in: grok-4-fast", "c in: grok-4-fast", "upstream", "c out", "b out", "a out"])
        #expect(response.headerFields[values: HTTPField.Name("x-stages")!] == ["c", "b", "a"])
    }

    @Test("An empty pipeline is the terminal handler itself")
    func emptyPipeline() async throws {
        let trace = Trace()
        let handler = Pipeline(stages: []).handler { _, _ in
            trace.add("upstream")
            return Self.okResponse()
        }
        _ = try await handler(try Self.request(), Self.context())
        #expect(trace.all == ["upstream"])
    }

    @Test("A rewrite by an outer stage is what inner stages and the upstream see")
    func rewriteFlowsInward() async throws {
        let trace = Trace()
        let pipeline = Pipeline(stages: [
            TracingStage(name: "outer", trace: trace), RenamingStage(model: "grok-4-fast-reasoning"), TracingStage(name: "inner", trace: trace),
        ])
        let handler = pipeline.handler { request, _ in
            trace.add("upstream got \(request.json["model"]?.stringValue ?? "?")")
            return Self.okResponse()
        }
        _ = try await handler(try Self.request(), Self.context())
        #expect(trace.all == ["outer in: grok-4-fast", "inner in: grok-4-fast-reasoning", "upstream got grok-4-fast-reasoning", "inner out", "outer out"])
    }

    @Test("A stage may answer without calling next")
    func zeroCalls() async throws {
        let trace = Trace()
        let pipeline = Pipeline(stages: [TracingStage(name: "outer", trace: trace), ShortCircuitStage(), TracingStage(name: "inner", trace: trace)])
        let handler = pipeline.handler { _, _ in
            trace.add("upstream")
            return Self.okResponse()
        }
        let response = try await handler(try Self.request(), Self.context())
        #expect(trace.all == ["outer in: grok-4-fast", "outer out"])
        #expect(response.status == .notFound)
        guard case .whole(let body) = response.body else {
            Issue.record("expected a whole body")
            return
        }
        #expect(try JSONValue(parsing: body.readableBytesView)["error"]?["code"] == "model_not_found")
    }

    @Test("A stage may call next twice, and everything inside runs twice")
    func twoCalls() async throws {
        let trace = Trace()
        let attempts = Locked(0)
        let pipeline = Pipeline(stages: [RetryOnceStage(), TracingStage(name: "inner", trace: trace)])
        let handler = pipeline.handler { _, _ in
            let attempt = attempts.withLock { count in
                count += 1
                return count
            }
            trace.add("upstream \(attempt)")
            return attempt == 1 ? ChatResponse(error: .upstreamUnreachable("down")) : Self.okResponse("second")
        }
        let response = try await handler(try Self.request(), Self.context())
        #expect(trace.all == ["inner in: grok-4-fast", "upstream 1", "inner out", "inner in: grok-4-fast", "upstream 2", "inner out"])
        #expect(response.status == .ok)
        guard case .whole(let body) = response.body else {
            Issue.record("expected a whole body")
            return
        }
        #expect(String(buffer: body) == "second")
    }

    @Test("A stage wrapping the event stream sees events only as the client pulls them")
    func wrappedStreamIsLazy() async throws {
        let trace = Trace()
        let pipeline = Pipeline(stages: [CountingStage(trace: trace)])
        let events = [StreamEvent.commentHeartbeat(), StreamEvent.done]
        let handler = pipeline.handler { _, _ in ChatResponse(status: .ok, body: .events(EventStream(events))) }
        let response = try await handler(try Self.request(), Self.context())
        #expect(trace.all.isEmpty, "nothing is pulled before the client asks")
        guard case .events(let stream) = response.body else {
            Issue.record("expected an event stream")
            return
        }
        var iterator = stream.makeAsyncIterator()
        _ = try await iterator.next()
        #expect(trace.all == ["saw heartbeat"])
        _ = try await iterator.next()
        #expect(try await iterator.next() == nil)
        #expect(trace.all == ["saw heartbeat", "saw done"])
    }

    @Test("Errors thrown inside propagate out through every stage")
    func errorsPropagate() async throws {
        let trace = Trace()
        let pipeline = Pipeline(stages: [TracingStage(name: "a", trace: trace)])
        let handler = pipeline.handler { _, _ in throw RelayError.upstreamTimeout("slow") }
        await #expect(throws: RelayError.upstreamTimeout("slow")) {
            _ = try await handler(try Self.request(), Self.context())
        }
        #expect(trace.all == ["a in: grok-4-fast"])
    }

    // MARK: StageRegistry

    @Test("The built-in registry makes passthrough")
    func builtInPassthrough() throws {
        let stage = try StageRegistry.builtIn.makeStage(named: "passthrough", options: [:])
        #expect(stage is PassThroughStage)
        #expect(StageRegistry.builtIn.names.contains("passthrough"))
    }

    @Test("An unknown stage name is rejected with a message naming it and the known ones")
    func unknownStage() {
        #expect {
            _ = try StageRegistry.builtIn.makeStage(named: "moderaton", options: [:])
        } throws: { error in
            let description = (error as? StageConfigurationError)?.description ?? ""
            return description.contains("'moderaton'") && description.contains("passthrough")
        }
    }

    @Test("An unknown option is rejected with a message naming the stage and the option")
    func unknownOption() {
        #expect {
            _ = try StageRegistry.builtIn.makeStage(named: "passthrough", options: ["interval": "15s", "bogus": true])
        } throws: { error in
            let description = (error as? StageConfigurationError)?.description ?? ""
            return description.contains("passthrough") && description.contains("bogus") && description.contains("interval")
        }
    }

    @Test("Registered stages are made with their options; names are sorted")
    func registerStage() throws {
        let seen = Locked<JSONValue?>(nil)
        var registry = StageRegistry()
        registry.register("passthrough") { _ in PassThroughStage() }
        registry.register("heartbeat") { options in
            var reader = StageOptions(options, stage: "heartbeat")
            let interval = reader.take("interval")
            try reader.finish()
            seen.withLock { $0 = interval }
            return PassThroughStage()
        }
        #expect(registry.names == ["heartbeat", "passthrough"])
        _ = try registry.makeStage(named: "heartbeat", options: ["interval": "15s"])
        #expect(seen.withLock { $0 } == "15s")
        #expect(throws: StageConfigurationError.self) {
            _ = try registry.makeStage(named: "heartbeat", options: ["interval": "15s", "jitter": 1])
        }
    }
}
