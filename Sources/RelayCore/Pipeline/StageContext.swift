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

    public init(
        requestID: String,
        requestedModel: String,
        upstreamName: String,
        caller: CallerIdentity? = nil,
        logger: Logger,
        record: RequestRecord
    ) {
        self.requestID = requestID
        self.requestedModel = requestedModel
        self.upstreamName = upstreamName
        self.caller = caller
        self.logger = logger
        self.record = record
    }
}

/// The local process on the other end of the Unix socket, from `SO_PEERCRED`.
public struct CallerIdentity: Sendable, Equatable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// The systemd unit the process runs in, from `/proc/PID/cgroup`, when readable.
    public var unit: String?

    public init(uid: UInt32, gid: UInt32, pid: Int32, unit: String? = nil) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.unit = unit
    }

    public var description: String { "uid=\(self.uid) gid=\(self.gid) pid=\(self.pid)" + (self.unit.map { " unit=\($0)" } ?? "") }
}
