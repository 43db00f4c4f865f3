import BenchSupport

/// The options of `bench-soak`.
struct SoakConfiguration: Sendable {
    var socketPath: String
    var pid: Int32
    var ledgerPath: String
    var requests: Int
    var concurrency: Int
    /// The content chunks the run must relay at least (0: no such check).
    var minimumContentChunks: Int
    /// RSS, descriptors and threads may end at most this fraction above their warm-up value.
    var growthTolerance: Double
    /// Samples taken during the run; the first is the warm-up.
    var steps: Int
    /// How many steps the warm-up lasts; its last sample is what later ones are held to.
    var warmUpSteps: Int
    var idleTimeoutSeconds: Int
    /// How long to wait for the last ledger lines (hang-ups are recorded after the client left).
    var ledgerWaitSeconds: Int
    var jsonPath: String?
    var mix: [SoakRequestKind]

    static let usage = """
        usage: bench-soak --socket PATH --pid PID --ledger PATH [--requests N] [--concurrency C]
                          [--min-content-chunks N] [--tolerance PERCENT] [--steps N] [--warm-up-steps K]
                          [--idle-timeout S] [--ledger-wait S] [--json PATH] [--only KIND]

          --socket PATH            the relay's Unix socket
          --pid PID                the relay's process, sampled from /proc (RSS, descriptors, threads)
          --ledger PATH            the relay's usage ledger (server.usage_ledger)
          --requests N             requests in all (default 50000), in a fixed mix of 20: 10 streams
                                   (bench-c50), 4 completions, 2 hang-ups mid-stream, one unknown model,
                                   one invalid JSON, one upstream 500, one upstream 429
          --concurrency C          clients at once, each with a kept-alive connection (default 32)
          --min-content-chunks N   fail unless at least N content chunks were relayed (default 0)
          --tolerance PERCENT      allowed growth after warm-up of RSS, descriptors, threads (default 10)
          --steps N                samples during the run, one per N-th of the requests (default 10);
                                   the first is the warm-up
          --warm-up-steps K        the warm-up lasts K steps (default 1)
          --idle-timeout S         a request with no byte for S seconds fails (default 30)
          --ledger-wait S          at most this long for the ledger to catch up at the end (default 60)
          --json PATH              also write the report as JSON
          --only KIND              send only this kind (to find which path leaks): stream, completion,
                                   unknown_model, invalid_json, upstream_500, upstream_429, disconnect
        Exits 0 when every check passes, 1 when one fails, 2 on a bad command line.
        """

    init(arguments: [String]) throws {
        let options = try CommandLineOptions(arguments, flagNames: [], usage: Self.usage)
        try options.rejectUnknown(besides: [
            "socket", "pid", "ledger", "requests", "concurrency", "min-content-chunks", "tolerance", "steps",
            "idle-timeout", "ledger-wait", "json", "only", "warm-up-steps",
        ])
        guard let socket = options.string("socket"), let ledger = options.string("ledger") else {
            throw OptionError("--socket and --ledger are required\n\(Self.usage)")
        }
        guard let pid = try options.integer("pid"), pid > 0 else { throw OptionError("--pid is required\n\(Self.usage)") }
        self.socketPath = socket
        self.ledgerPath = ledger
        self.pid = Int32(pid)
        self.requests = try options.integer("requests", default: 50_000)
        self.concurrency = try options.integer("concurrency", default: 32)
        self.minimumContentChunks = try options.integer("min-content-chunks", default: 0)
        self.growthTolerance = (try options.double("tolerance") ?? 10) / 100
        self.steps = try options.integer("steps", default: 10)
        self.warmUpSteps = try options.integer("warm-up-steps", default: 1)
        self.idleTimeoutSeconds = try options.integer("idle-timeout", default: 30)
        self.ledgerWaitSeconds = try options.integer("ledger-wait", default: 60)
        self.jsonPath = options.string("json")
        if let only = options.string("only") {
            guard let kind = SoakRequestKind(rawValue: only) else { throw OptionError("--only: no kind '\(only)'\n\(Self.usage)") }
            self.mix = [kind]
        } else {
            self.mix = SoakMix.cycle
        }
        guard self.requests > 0, self.concurrency > 0, self.steps >= 2, (1..<self.steps).contains(self.warmUpSteps) else {
            throw OptionError("--requests and --concurrency must be positive, --steps at least 2, --warm-up-steps from 1 to steps - 1")
        }
    }
}
