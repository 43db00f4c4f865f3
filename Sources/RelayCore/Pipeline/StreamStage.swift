/// The next step of a pipeline: the following stage, or the upstream at the end.
public typealias ChatHandler = @Sendable (ChatRequest, StageContext) async throws -> ChatResponse

/// One step of the relay pipeline, shaped as middleware around `next`.
///
/// A stage may rewrite the request, call `next` zero or several times (retry, fallback),
/// and wrap the event stream of the response it returns (coalescing, moderation, usage).
///
/// The contract every stage keeps:
/// - Pull, don't push: a wrapped stream produces an event only when asked for one, so a
///   slow client slows the upstream read. Nothing is buffered without a bound.
/// - Forward what you do not change as it came (`StreamEvent.frame.raw`).
/// - The commit point: until an event that ``StreamEvent/commits`` has gone to the client,
///   the response may still be retried or turned into a clean HTTP error; after it,
///   failures end the stream with one OpenAI-style error event. A stage never re-sends
///   what went past the commit point.
/// - Each stage's doc comment says what it holds back, when it commits, and what it emits
///   while upstream is silent.
public protocol StreamStage: Sendable {
    func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse
}

/// A pipeline: stages folded around a terminal handler, once per configuration generation.
public struct Pipeline: Sendable {
    /// The stages, outermost (closest to the client) first.
    public let stages: [any StreamStage]

    public init(stages: [any StreamStage]) {
        self.stages = stages
    }

    /// Folds the stages around `terminal` (usually an upstream), last stage innermost.
    ///
    /// A plain loop, not `reduce`: through its generic result every handler was wrapped in a
    /// reabstraction thunk, a call and a hop of the executor more at each stage, every request.
    public func handler(around terminal: @escaping ChatHandler) -> ChatHandler {
        var handler = terminal
        for stage in self.stages.reversed() {
            let next = handler
            handler = { request, context in try await stage.handle(request, context: context, next: next) }
        }
        return handler
    }
}
