import NIOCore

/// Walks one response through its script: which event comes next, or how long to wait first.
///
/// A plain value with no I/O, so the handler decides when to write and the order of events
/// is easy to follow: role, then for each content chunk its flood of empty chunks and the
/// chunk itself (after the delay, from the second on), finish, usage if asked, `[DONE]`.
struct StreamCursor {
    enum Step {
        case event(ByteBuffer)
        case wait(TimeAmount)
        case end
    }

    private enum Stage {
        case role, content, finish, usage, done, ended
    }

    private let script: StreamScript
    private let payloads: ChunkPayloads
    private let includeUsage: Bool
    private var stage = Stage.role
    private var contentIndex = 0
    private var emptyChunksSent = 0
    private var waitedBeforeGroup = false

    init(script: StreamScript, includeUsage: Bool) {
        self.script = script
        self.payloads = ChunkPayloads.forContentChunks(script.contentChunks)
        self.includeUsage = includeUsage
    }

    mutating func next() -> Step {
        switch self.stage {
        case .role:
            self.stage = .content
            return .event(self.payloads.role)
        case .content:
            guard self.contentIndex < self.script.contentChunks else {
                self.stage = .finish
                return self.next()
            }
            let startsGroup = self.emptyChunksSent == 0
            if startsGroup, self.contentIndex > 0, self.script.millisecondsBetweenContent > 0, !self.waitedBeforeGroup {
                self.waitedBeforeGroup = true
                return .wait(.milliseconds(Int64(self.script.millisecondsBetweenContent)))
            }
            if self.emptyChunksSent < self.script.emptyChunksBeforeContent {
                self.emptyChunksSent += 1
                return .event(self.payloads.empty)
            }
            let chunk = self.payloads.contents[self.contentIndex]
            self.contentIndex += 1
            self.emptyChunksSent = 0
            self.waitedBeforeGroup = false
            return .event(chunk)
        case .finish:
            self.stage = self.includeUsage ? .usage : .done
            return .event(self.payloads.finish)
        case .usage:
            self.stage = .done
            return .event(self.payloads.usage)
        case .done:
            self.stage = .ended
            return .event(self.payloads.done)
        case .ended:
            return .end
        }
    }
}
