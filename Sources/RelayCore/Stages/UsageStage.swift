import HTTPTypes
import NIOCore

/// Stage `usage`: makes sure the upstream reports token usage and writes it, the served
/// model and the finish reason into the request's ``UsageRecord``.
///
/// - Holds back: nothing. Every event goes on as it came, except the usage-only chunk
///   (`choices: []` with `usage`) of a stream whose usage the client did not ask for:
///   the stage asked for it (`stream_options.include_usage`), so the client never sees
///   it. Usage that rides in a chunk with content (the finish chunk, OpenRouter's
///   trailing chunk) stays where it is. When the client asked for usage, neither the
///   request nor the stream changes.
/// - Commits: nothing itself; it sends each event on as soon as it has read it.
/// - On silence: emits nothing.
///
/// Usage is read wherever it comes (its own `choices: []` chunk, the finish chunk, a chunk
/// after the finish, Groq's `x_groq.usage`) and never added up: the last complete report
/// wins, because Groq sends the same report twice. Azure's `choices: []` filter chunk
/// carries no usage and is neither read nor removed. Non-streaming responses are read
/// from the whole body. Takes no options.
public struct UsageStage: StreamStage {
    public init() {}

    public func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        var upstreamRequest = request
        // Read once: the request's `clientRequestedStreamUsage`, and the options kept.
        let clientOptions = request.stream ? request.member("stream_options") : nil
        let usageAdded = request.stream && clientOptions?["include_usage"]?.boolValue != true
        if usageAdded {
            var options = clientOptions?.objectValue ?? [:]
            options["include_usage"] = true
            upstreamRequest.set("stream_options", to: .object(options))
        }
        let response = try await next(upstreamRequest, context)
        switch response.body {
        case .whole(let body):
            if response.status.kind == .successful, let json = try? JSONValue(parsing: body.readableBytesView) {
                context.record.update { record in
                    if let tokens = UsageNormalizer.tokens(fromCompletion: json) { record.tokens = tokens }
                    if record.servedModel == nil, let model = json["model"]?.stringValue, !model.isEmpty { record.servedModel = model }
                    if record.finishReason == nil {
                        record.finishReason = json["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue
                    }
                }
            }
            return response
        case .events(let events):
            let counted = UsageEventSequence(base: events, record: context.record, hidesUsageChunk: usageAdded)
            return ChatResponse(status: response.status, headerFields: response.headerFields, body: .events(EventStream(counted, waitsWithDeadlines: events.waitsWithDeadlines)))
        }
    }
}

/// The usage stage's view of a stream: every event noted in the record, the usage-only
/// chunk left out when the stage asked for it.
struct UsageEventSequence: AsyncSequence, Sendable {
    typealias Element = StreamEvent

    let base: EventStream
    let record: RequestRecord
    let hidesUsageChunk: Bool

    func makeAsyncIterator() -> Iterator {
        Iterator(base: self.base.makeAsyncIterator(), record: self.record, hidesUsageChunk: self.hidesUsageChunk)
    }

    struct Iterator: DeadlineIterator {
        var base: EventStream.Iterator
        let record: RequestRecord
        let hidesUsageChunk: Bool

        mutating func next() async throws -> StreamEvent? {
            while let event = try await self.base.next() {
                if self.passes(event) { return event }
            }
            return nil
        }

        // Switched over as it comes, the event moves out and back in: bound from a `let`
        // that was then returned, it was copied (callgrind: an outlined copy every event).
        nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
            while true {
                switch try await self.base.next(before: deadline) {
                case .element(let event): if self.passes(event) { return .element(event) }
                case .end: return .end
                case .deadlinePassed: return .deadlinePassed
                }
            }
        }

        var canBeReady: Bool { self.base.canBeReady }

        mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
            while true {
                switch try self.base.nextIfReady() {
                case .element(let event): if self.passes(event) { return .element(event) }
                case .end: return .end
                case .deadlinePassed: return .deadlinePassed
                }
            }
        }

        /// Records what `event` says; false if the client should not see it. Kept out of
        /// `next` so that its values do not widen the async frame that every stream holds
        /// for as long as it lasts.
        @inline(never)
        private func passes(_ event: StreamEvent) -> Bool {
            guard let facts = event.facts else {
                self.record.update { $0.eventsReceived += 1 }
                return true
            }
            let tokens = facts.usage.flatMap(UsageNormalizer.tokens(from:))
            // The fields the update needs, read first: a closure that captured `facts` held a
            // copy of the whole (a retain and a release of each of its strings, every event).
            let model = facts.model
            let finishReason = facts.finishReason
            self.record.update { record in
                record.eventsReceived += 1
                if let tokens { record.tokens = tokens }
                if record.servedModel == nil, let model, !model.isEmpty { record.servedModel = model }
                if record.finishReason == nil { record.finishReason = finishReason }
            }
            // With no choices there is nothing a client shows; vendor statistics riding
            // along (llama.cpp's `timings`) are part of the usage report and go with it.
            return !(self.hidesUsageChunk && facts.hasNoChoices && facts.usage != nil)
        }
    }
}
