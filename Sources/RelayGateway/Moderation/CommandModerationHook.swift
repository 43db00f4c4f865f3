import Foundation
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import RelayCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Moderation hook kind `command`: a long-running program that judges text, speaking JSON
/// lines on its standard input and output, so that moderation can be written in any
/// language.
///
/// Each request is one line, `{"id":7,"text":"...","where":"output.content",
/// "request_id":"req_...","model":"..."}`; the program answers each with one line, in
/// order: `{"id":7,"action":"pass"}`, or `"flag"`/`"redact"`/`"block"` with an optional
/// `"rule"` and, for redact, `"replacement"` (the new text of the whole window). OpenAI's
/// moderation shape (`{"results":[{"flagged":true,"categories":{...}}]}`) is accepted too.
/// The `id` may be left out; answers are then taken in order. Requests from every stream
/// share the one process and may be in flight together.
///
/// The program starts on first use, not when the configuration is read (`check-config`
/// and reload validation start nothing). When it exits or closes its output, the requests
/// waiting on it fail at once (the stage then applies `on_failure`) and the next request
/// starts it again. Its standard error goes to the daemon's (the journal). It is stopped
/// with SIGTERM when its configuration generation is released. A request that times out
/// is abandoned; its late answer is read and dropped.
final class CommandModerationHook: ModerationHook {
    let name: String
    let arguments: [String]
    /// What a flagged answer in OpenAI's shape means.
    let flaggedAction: ModerationAction
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var child: CommandHookChild?
        var starting: Task<CommandHookChild, any Error>?
        var generation = 0
        /// The latest run known to have exited (possibly before it was installed as `child`).
        var exitedGeneration = 0
        var nextID = 1
        /// Requests written and not yet answered, in order; an abandoned one has no continuation.
        var pending: [(id: Int, generation: Int, continuation: CheckedContinuation<JSONValue, any Error>?)] = []
        /// Requests cancelled before they were written.
        var cancelledIDs: Set<Int> = []
        var closed = false
    }

    init(name: String, arguments: [String], flaggedAction: ModerationAction = .block, logger: Logger) {
        precondition(!arguments.isEmpty, "a command hook needs a program")
        self.name = name
        self.arguments = arguments
        self.flaggedAction = flaggedAction
        self.logger = logger
    }

    deinit {
        let child = self.state.withLock { state -> CommandHookChild? in
            state.closed = true
            state.starting?.cancel()
            return state.child
        }
        child?.stop()
    }

    /// The running program's process id, if it runs.
    var pid: Int32? { self.state.withLock { $0.child?.pid } }

    /// Reads the `command` hook's own options: `command` (a list: the program and its
    /// arguments; or one string, the program alone). A program without `/` is looked up
    /// in `PATH` now, so that a typo is a configuration error.
    static func make(options: inout StageOptions, settings: ExternalHookSettings) throws -> any ModerationHook {
        let value = options.take("command")
        var arguments: [String]
        if let text = value?.stringValue {
            arguments = [text]
        } else if let list = value?.arrayValue, !list.isEmpty, list.allSatisfy({ $0.stringValue != nil }) {
            arguments = list.compactMap(\.stringValue)
        } else {
            throw options.error("command", "give the program and its arguments as a list, such as [/usr/bin/python3, /etc/chatrelayd/hook.py]")
        }
        guard let program = Self.resolve(arguments[0]) else {
            throw options.error("command", "'\(arguments[0])' is not an executable file (nor found in PATH)")
        }
        arguments[0] = program
        return CommandModerationHook(
            name: settings.name, arguments: arguments, flaggedAction: settings.flaggedAction,
            logger: Logger(label: "chatrelayd.moderation.\(settings.name)")
        )
    }

    private static func resolve(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func check(_ input: ModerationHookInput) async throws -> ModerationHookAnswer {
        let child = try await self.running()
        let id = self.state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        var request = input.json
        request["id"] = .number(Double(id))
        var line = ByteBuffer(string: JSONValue.object(request).serialized())
        line.writeString("\n")
        let answer = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JSONValue, any Error>) in
                enum Start { case write, cancelled, gone }
                let start = self.state.withLock { state -> Start in
                    if state.cancelledIDs.remove(id) != nil { return .cancelled }
                    guard state.child === child else { return .gone }
                    state.pending.append((id, child.generation, continuation))
                    return .write
                }
                switch start {
                case .cancelled:
                    continuation.resume(throwing: CancellationError())
                case .gone:
                    continuation.resume(throwing: ModerationHookError.crashed("the hook process exited"))
                case .write:
                    child.channel.writeAndFlush(line).whenFailure { [weak self] error in
                        self?.fail(id: id, ModerationHookError.crashed("cannot write to the hook process: \(error)"))
                    }
                }
            }
        } onCancel: {
            self.abandon(id: id)
        }
        return try ModerationHookAnswer(json: answer, flaggedAction: self.flaggedAction)
    }

    /// The running child, started (once, whoever asks first) if there is none.
    private func running() async throws -> CommandHookChild {
        enum Found {
            case child(CommandHookChild)
            case starting(Task<CommandHookChild, any Error>)
        }
        let found = try self.state.withLock { state -> Found in
            if state.closed { throw ModerationHookError.unreachable("the hook is shut down") }
            if let child = state.child { return .child(child) }
            if let starting = state.starting { return .starting(starting) }
            state.generation += 1
            let generation = state.generation
            let arguments = self.arguments
            // The child's callbacks refer to the hook weakly: the hook owns the child.
            let onLine: @Sendable (ByteBuffer) -> Void = { [weak self] line in self?.receive(line, generation: generation) }
            let onExit: @Sendable () -> Void = { [weak self] in self?.exited(generation: generation) }
            let starting = Task {
                try await CommandHookChild.start(arguments: arguments, generation: generation, onLine: onLine, onExit: onExit)
            }
            state.starting = starting
            return .starting(starting)
        }
        let task: Task<CommandHookChild, any Error>
        switch found {
        case .child(let child): return child
        case .starting(let starting): task = starting
        }
        let child: CommandHookChild
        do {
            child = try await task.value
        } catch {
            self.state.withLock { state in
                if state.starting == task { state.starting = nil }
            }
            throw ModerationHookError.unreachable("cannot start \(self.arguments[0]): \(error)")
        }
        let (installed, closed) = self.state.withLock { state -> (Bool, Bool) in
            guard state.starting == task else { return (false, state.closed) }
            state.starting = nil
            guard !state.closed else { return (false, true) }
            // A program that died at once is not installed; the next request starts another.
            guard child.generation > state.exitedGeneration else { return (false, false) }
            state.child = child
            return (true, false)
        }
        if closed {
            child.stop()
            throw ModerationHookError.unreachable("the hook is shut down")
        }
        if installed { self.logger.notice("moderation hook '\(self.name)' started", metadata: ["pid": .stringConvertible(child.pid)]) }
        return child
    }

    /// One line from the child: the answer to the request it names by `id`, or else to the
    /// oldest one waiting. A line naming a request nobody waits for any more is dropped.
    private func receive(_ line: ByteBuffer, generation: Int) {
        let document = try? JSONValue(parsing: line.readableBytesView)
        let continuation = self.state.withLock { state -> CheckedContinuation<JSONValue, any Error>? in
            let index: Int?
            if let id = document?["id"]?.intValue {
                index = state.pending.firstIndex { $0.id == id && $0.generation == generation }
            } else {
                index = state.pending.firstIndex { $0.generation == generation }
            }
            guard let index else { return nil }
            let entry = state.pending.remove(at: index)
            // Answers come in order: an abandoned request before this one gets none now.
            state.pending.removeAll { $0.generation == generation && $0.id < entry.id && $0.continuation == nil }
            return entry.continuation
        }
        guard let continuation else { return }
        if let document {
            continuation.resume(returning: document)
        } else {
            continuation.resume(throwing: ModerationHookError.badAnswer("the answer is not JSON"))
        }
    }

    /// The child is gone: everything waiting on it fails now; the next request starts another.
    private func exited(generation: Int) {
        let waiting = self.state.withLock { state -> [CheckedContinuation<JSONValue, any Error>] in
            state.exitedGeneration = max(state.exitedGeneration, generation)
            if state.child?.generation == generation { state.child = nil }
            let waiting = state.pending.filter { $0.generation == generation }.compactMap(\.continuation)
            state.pending.removeAll { $0.generation == generation }
            return waiting
        }
        self.logger.warning("moderation hook '\(self.name)' exited; it starts again on the next request")
        waiting.forEach { $0.resume(throwing: ModerationHookError.crashed("the hook process exited")) }
    }

    private func fail(id: Int, _ error: ModerationHookError) {
        let continuation = self.state.withLock { state -> CheckedContinuation<JSONValue, any Error>? in
            guard let index = state.pending.firstIndex(where: { $0.id == id }) else { return nil }
            return state.pending.remove(at: index).continuation
        }
        continuation?.resume(throwing: error)
    }

    /// The caller gave up (timeout or cancellation): the request stays in line, unanswered,
    /// so that its late answer is not taken for the next one's.
    private func abandon(id: Int) {
        let continuation = self.state.withLock { state -> CheckedContinuation<JSONValue, any Error>? in
            guard let index = state.pending.firstIndex(where: { $0.id == id }) else {
                state.cancelledIDs.insert(id)
                return nil
            }
            defer { state.pending[index].continuation = nil }
            return state.pending[index].continuation
        }
        continuation?.resume(throwing: CancellationError())
    }
}

/// One run of a command hook's program and the pipe channel to it.
final class CommandHookChild: Sendable {
    let generation: Int
    let pid: Int32
    let channel: any Channel
    private let process: Mutex<Process?>

    private init(generation: Int, process: Process, channel: any Channel) {
        self.generation = generation
        self.pid = process.processIdentifier
        self.channel = channel
        self.process = Mutex(process)
    }

    /// Starts the program with pipes on its standard input and output.
    static func start(
        arguments: [String],
        generation: Int,
        onLine: @escaping @Sendable (ByteBuffer) -> Void,
        onExit: @escaping @Sendable () -> Void
    ) async throws -> CommandHookChild {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        // Our ends, close-on-exec so that no other child inherits them (which would keep the
        // pipes open after this child dies).
        let readFD = fcntl(output.fileHandleForReading.fileDescriptor, F_DUPFD_CLOEXEC, 0)
        let writeFD = fcntl(input.fileHandleForWriting.fileDescriptor, F_DUPFD_CLOEXEC, 0)
        try? output.fileHandleForReading.close()
        try? input.fileHandleForWriting.close()
        guard readFD >= 0, writeFD >= 0 else {
            process.terminate()
            throw ModerationHookError.unreachable("cannot set up the pipes: \(String(cString: strerror(errno)))")
        }
        let channel: any Channel
        do {
            channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(CommandHookLineHandler(onLine: onLine, onExit: onExit))
                    }
                }
                .takingOwnershipOfDescriptors(input: readFD, output: writeFD).get()
        } catch {
            close(readFD)
            close(writeFD)
            process.terminate()
            throw error
        }
        return CommandHookChild(generation: generation, process: process, channel: channel)
    }

    /// SIGTERM to the program and the pipes closed.
    func stop() {
        self.process.withLock { process in
            if let running = process, running.isRunning { running.terminate() }
            process = nil
        }
        self.channel.close(promise: nil)
    }
}

/// Hands each line the program writes to the hook, and tells it when the program has gone.
private final class CommandHookLineHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let onLine: @Sendable (ByteBuffer) -> Void
    private let onExit: @Sendable () -> Void

    init(onLine: @escaping @Sendable (ByteBuffer) -> Void, onExit: @escaping @Sendable () -> Void) {
        self.onLine = onLine
        self.onExit = onExit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.onLine(Self.unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.onExit()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
