/// Stage `passthrough`: hands the request on and the response back unchanged.
///
/// Holds back nothing, commits when the upstream's first content event does, emits nothing
/// on silence. It is the pipeline's identity: useful as a placeholder and as the baseline
/// the benchmarks compare the other stages against.
public struct PassThroughStage: StreamStage {
    public init() {}

    public func handle(_ request: ChatRequest, context: StageContext, next: @escaping ChatHandler) async throws -> ChatResponse {
        try await next(request, context)
    }
}
