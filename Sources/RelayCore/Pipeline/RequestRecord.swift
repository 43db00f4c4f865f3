import Synchronization

/// Everything worth knowing about one request once it is over: who asked, what served
/// it, how it ended, how long it took, what it cost.
public struct UsageRecord: Sendable, Equatable {
    public var requestID: String
    public var requestedModel: String
    /// The model the upstream reported in its response.
    public var servedModel: String?
    public var upstream: String
    public var stream: Bool
    /// The HTTP status the client got.
    public var status: Int = 0
    public var finishReason: String?
    /// Why the request failed, when it did (never a credential).
    public var error: String?
    /// The client hung up before the response was complete.
    public var clientDisconnected = false
    public var caller: CallerIdentity?
    public var tokens = TokenUsage()
    /// Upstream attempts made for this request.
    public var attempts = 0
    public var eventsReceived = 0
    public var eventsSent = 0
    public var emptyChunksDropped = 0
    public var heartbeatsSent = 0
    /// The moderation stage's verdicts other than pass (rule, action, where), in order.
    public var moderation: [ModerationVerdict] = []
    /// Seconds from the request's arrival to the response head, the first content event and the end.
    public var timeToFirstByte: Double?
    public var timeToFirstContent: Double?
    public var totalTime: Double?

    public init(requestID: String, requestedModel: String, upstream: String, stream: Bool, caller: CallerIdentity?) {
        self.requestID = requestID
        self.requestedModel = requestedModel
        self.upstream = upstream
        self.stream = stream
        self.caller = caller
    }
}

/// Token counts in one shape whatever the provider's; nil where the provider said nothing.
public struct TokenUsage: Sendable, Equatable {
    public var prompt: Int?
    public var completion: Int?
    public var reasoning: Int?
    public var cachedPrompt: Int?
    public var total: Int?

    public init(prompt: Int? = nil, completion: Int? = nil, reasoning: Int? = nil, cachedPrompt: Int? = nil, total: Int? = nil) {
        self.prompt = prompt
        self.completion = completion
        self.reasoning = reasoning
        self.cachedPrompt = cachedPrompt
        self.total = total
    }
}

/// The shared, lockable usage record of one request in flight.
public final class RequestRecord: Sendable {
    private let state: Mutex<UsageRecord>
    /// When the request arrived.
    public let start: ContinuousClock.Instant

    public init(_ record: UsageRecord, start: ContinuousClock.Instant = .now) {
        self.state = Mutex(record)
        self.start = start
    }

    /// Changes the record under its lock.
    public func update(_ body: (inout UsageRecord) -> Void) {
        self.state.withLock { body(&$0) }
    }

    /// A copy of the record as it stands.
    public var snapshot: UsageRecord { self.state.withLock { $0 } }

    /// Seconds since the request arrived.
    public func elapsed(now: ContinuousClock.Instant = .now) -> Double {
        let duration = self.start.duration(to: now)
        return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
