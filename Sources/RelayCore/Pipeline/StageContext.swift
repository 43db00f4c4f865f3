public import Logging

/// What a stage knows about the request besides its body: who asked, where it goes, and
/// the record that the usage stage and the server fill in as the response passes.
public struct StageContext: Sendable {
    /// A unique id for the request, also sent to the client as `x-request-id`.
    public var requestID: String
    /// The model name the client asked for.
    public var requestedModel: String
    /// The upstream chosen for the model.
    public var upstreamName: String
    /// The caller, as the kernel reported it on the Unix socket (nil when unknown).
    public var caller: CallerIdentity?
    /// A logger carrying the request's metadata.
    public var logger: Logger
    /// The request's usage record, shared by all stages and the server.
    public let record: RequestRecord
    /// Where else the model may be served when `upstreamName` fails, in order (the retry
    /// stage uses them; without it they are ignored).
    public var fallbacks: [RouteTarget]

    public init(
        requestID: String,
        requestedModel: String,
        upstreamName: String,
        caller: CallerIdentity? = nil,
        logger: Logger,
        record: RequestRecord,
        fallbacks: [RouteTarget] = []
    ) {
        self.requestID = requestID
        self.requestedModel = requestedModel
        self.upstreamName = upstreamName
        self.caller = caller
        self.logger = logger
        self.record = record
        self.fallbacks = fallbacks
    }
}

/// One place a model can be served: an upstream and the model name it knows.
public struct RouteTarget: Sendable, Equatable, CustomStringConvertible {
    public var upstream: String
    public var model: String

    public init(upstream: String, model: String) {
        self.upstream = upstream
        self.model = model
    }

    public var description: String { "\(self.upstream)/\(self.model)" }
}
