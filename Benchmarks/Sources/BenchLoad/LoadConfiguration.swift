import BenchSupport
import NIOCore
import NIOHTTP1

/// Where the load goes: a relay's Unix socket, or an HTTP server over TCP (the upstream
/// itself for the direct case, or LiteLLM).
enum Endpoint: Sendable, CustomStringConvertible {
    case unixSocket(path: String)
    case tcp(host: String, port: Int)

    var description: String {
        switch self {
        case .unixSocket(let path): "unix:\(path)"
        case .tcp(let host, let port): "\(host):\(port)"
        }
    }
}

/// What one `bench-load` run does, from its command line.
struct LoadConfiguration: Sendable {
    var endpoint: Endpoint
    var concurrency: Int
    /// Each worker starts requests until this many seconds have passed...
    var durationSeconds: Double?
    /// ...or until it has made this many.
    var requestsPerWorker: Int?
    var model: String
    var includeUsage: Bool
    /// Every request asks for its connection to be closed (`Connection: close`), so each
    /// one pays for a new connection; for comparing relays whose keep-alive is broken.
    var connectionClose: Bool
    /// Sent as `Authorization: Bearer KEY`; relays that hold the real keys ignore it, LiteLLM checks it.
    var apiKey: String
    var expectedContentChunks: Int?
    var relayPids: [Int32]
    var upstreamPids: [Int32]
    var threads: Int
    var jsonPath: String?
    var label: String?
    /// A request that receives nothing for this long fails (and its connection is closed).
    var idleTimeoutSeconds: Int

    static let usage = """
        usage: bench-load (--socket PATH | --tcp HOST:PORT) [--concurrency N]
                          (--duration SECONDS | --requests-per-worker K) [--model bench-c50]
                          [--pid PID]... [--upstream-pid PID] [--expect-content N] [--include-usage]
                          [--connection-close] [--api-key KEY]
                          [--threads N] [--idle-timeout SECONDS] [--label NAME] [--json PATH]
          Each of N workers keeps one keep-alive connection and loops: POST a streaming chat
          request, read it to [DONE]. --pid (repeatable, or comma-separated) names the relay's
          processes, whose CPU time and memory are read from /proc and summed. A request that
          receives no byte for --idle-timeout seconds (default 30) fails.
        """

    static let optionNames: Set<String> = [
        "socket", "tcp", "concurrency", "duration", "requests-per-worker", "model", "include-usage", "expect-content",
        "pid", "upstream-pid", "threads", "json", "label", "idle-timeout", "connection-close", "api-key",
    ]

    init(arguments: [String]) throws {
        let options = try CommandLineOptions(arguments, flagNames: ["include-usage", "connection-close"], usage: Self.usage)
        try options.rejectUnknown(besides: Self.optionNames)
        switch (options.string("socket"), options.string("tcp")) {
        case (let path?, nil):
            self.endpoint = .unixSocket(path: path)
        case (nil, let address?):
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
                throw OptionError("--tcp takes HOST:PORT, not '\(address)'")
            }
            self.endpoint = .tcp(host: String(address[..<colon]), port: port)
        default:
            throw OptionError("give exactly one of --socket PATH and --tcp HOST:PORT\n\(Self.usage)")
        }
        self.concurrency = try options.integer("concurrency", default: 1)
        self.durationSeconds = try options.double("duration")
        self.requestsPerWorker = try options.integer("requests-per-worker")
        if self.durationSeconds == nil, self.requestsPerWorker == nil { self.durationSeconds = 10 }
        self.model = options.string("model", default: "bench-c50")
        self.includeUsage = options.flag("include-usage")
        self.connectionClose = options.flag("connection-close")
        self.apiKey = options.string("api-key", default: "bench")
        self.expectedContentChunks = try options.integer("expect-content")
        self.relayPids = try Self.pids(options.list("pid"), option: "pid")
        self.upstreamPids = try Self.pids(options.list("upstream-pid"), option: "upstream-pid")
        self.threads = try options.integer("threads", default: System.coreCount)
        self.jsonPath = options.string("json")
        self.label = options.string("label")
        self.idleTimeoutSeconds = try options.integer("idle-timeout", default: 30)
        guard self.concurrency >= 1, self.threads >= 1 else { throw OptionError("--concurrency and --threads must be at least 1") }
    }

    private static func pids(_ texts: [String], option: String) throws -> [Int32] {
        try texts.map { text in
            guard let pid = Int32(text) else { throw OptionError("--\(option): '\(text)' is not a pid") }
            return pid
        }
    }

    /// The request every worker sends, built once.
    func makeRequestTemplate() -> RequestTemplate {
        let streamOptions = self.includeUsage ? #","stream_options":{"include_usage":true}"# : ""
        let body = #"{"model":"\#(self.model)","stream":true\#(streamOptions),"messages":["#
            + #"{"role":"system","content":"You are a helpful assistant"},"#
            + #"{"role":"user","content":"Say hi in Portuguese"}]}"#
        var headers = HTTPHeaders()
        switch self.endpoint {
        case .unixSocket: headers.add(name: "Host", value: "localhost")
        case .tcp(let host, let port): headers.add(name: "Host", value: "\(host):\(port)")
        }
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Accept", value: "text/event-stream")
        headers.add(name: "Authorization", value: "Bearer \(self.apiKey)")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        if self.connectionClose { headers.add(name: "Connection", value: "close") }
        return RequestTemplate(
            head: HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/chat/completions", headers: headers),
            body: ByteBuffer(string: body)
        )
    }
}

/// The request head and body every worker sends.
struct RequestTemplate: Sendable {
    let head: HTTPRequestHead
    let body: ByteBuffer
}
