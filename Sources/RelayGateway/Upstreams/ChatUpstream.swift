import HTTPTypes
import NIOCore
public import RelayCore

/// Where a pipeline ends: something that answers a chat request.
public protocol ChatUpstream: Sendable {
    /// Sends `request` and returns the response head with a lazy body.
    func send(_ request: ChatRequest, context: StageContext) async throws -> ChatResponse
}

/// Turns an upstream's raw response (status, headers, body bytes) into a ``ChatResponse``:
/// a decoded event stream for a successful stream, the whole body otherwise.
///
/// Shared by every upstream kind so that a cassette and a live provider go through the same
/// decoder.
enum UpstreamResponseAdapter {
    static func makeResponse<Body: AsyncSequence & Sendable>(
        status: HTTPResponse.Status,
        contentType: String?,
        passthroughHeaders: HTTPFields,
        body: Body,
        streamRequested: Bool,
        maximumEventSize: Int,
        maximumBodySize: Int,
        commentsOnlyTimeout: CommentsOnlyTimeout? = nil,
        deadline: UpstreamDeadline? = nil,
        mapError: @escaping @Sendable (any Error) -> RelayError
    ) async throws -> ChatResponse where Body.Element == ByteBuffer {
        let isEventStream = contentType?.lowercased().hasPrefix("text/event-stream") ?? false
        if status.kind == .successful, streamRequested, isEventStream {
            let events = UpstreamEventSequence(
                body: body, maximumEventSize: maximumEventSize, commentsOnlyTimeout: commentsOnlyTimeout, deadline: deadline, mapError: mapError
            )
            // A live upstream's body waits with deadlines (the keepalive stage then needs no
            // pump); a cassette's does not.
            let stream = (events as? UpstreamEventSequence<UpstreamBody>).map { EventStream($0, waitsWithDeadlines: true) } ?? EventStream(events)
            return ChatResponse(status: status, headerFields: passthroughHeaders, body: .events(stream))
        }
        var collected = ByteBuffer()
        do {
            for try await var part in body {
                guard collected.readableBytes + part.readableBytes <= maximumBodySize else {
                    throw RelayError.upstreamFailed("The upstream response is larger than \(maximumBodySize) bytes.")
                }
                collected.writeBuffer(&part)
                if let deadline, ContinuousClock.now > deadline.instant { throw deadline.error }
            }
        } catch let error as RelayError {
            throw error
        } catch {
            throw mapError(error)
        }
        var headers = passthroughHeaders
        headers[.contentType] = contentType ?? "application/json"
        return ChatResponse(status: status, headerFields: headers, body: .whole(collected))
    }
}

/// How long an upstream may send nothing but SSE comment blocks before its stream ends.
///
/// Comments (`: OPENROUTER PROCESSING`, `: keepalive`) say the provider is alive but carry
/// no meaning, and every byte of them resets the transport's idle timer. A provider stuck
/// sending them forever would then hold the stream (and the client) until the total
/// timeout, an hour by default. So comment-only time counts as silence: after the
/// upstream's `idle_timeout` with nothing but comments the stream fails like a silent one.
struct CommentsOnlyTimeout: Sendable {
    var limit: Duration
    var upstream: String

    var error: RelayError {
        .upstreamTimeout("Upstream '\(self.upstream)' sent nothing but comments for longer than its idle timeout.")
    }
}

/// When an upstream request must be over: its `total_timeout` after it was sent.
///
/// Checked as each read arrives (for a stream, at its frames, with the time the relay took
/// the read up), so a stream that keeps sending is cut at the deadline; one that goes
/// silent ends by the idle timeout first.
struct UpstreamDeadline: Sendable {
    var instant: ContinuousClock.Instant
    var upstream: String

    var error: RelayError { Self.exceeded(upstream: self.upstream) }

    /// What the client is told when an upstream's total timeout is over.
    static func exceeded(upstream: String) -> RelayError {
        .upstreamTimeout("Upstream '\(upstream)' did not finish within its total timeout.")
    }
}

/// Upstream body bytes → SSE frames → classified events, with the upstream's errors
/// turned into ``RelayError``s as they surface.
struct UpstreamEventSequence<Body: AsyncSequence & Sendable>: AsyncSequence, Sendable where Body.Element == ByteBuffer {
    typealias Element = StreamEvent
    let body: Body
    let maximumEventSize: Int
    var commentsOnlyTimeout: CommentsOnlyTimeout? = nil
    var deadline: UpstreamDeadline? = nil
    let mapError: @Sendable (any Error) -> RelayError

    struct AsyncIterator: AsyncIteratorProtocol {
        var frames: SSEFrameSequence<Body>.AsyncIterator
        let commentsOnlyTimeout: CommentsOnlyTimeout?
        let deadline: UpstreamDeadline?
        /// `deadline`'s instant, kept apart: reading it through the optional struct copied
        /// and released the whole deadline (its upstream's name) on every event.
        let deadlineInstant: ContinuousClock.Instant?
        /// When the stream started or last sent something other than a comment block.
        var lastMeaningful = ContinuousClock.now
        /// When the relay took up the read that its last frame came from, and which read
        /// that was (``SSEFrameSequence/AsyncIterator/reads``). The frames of one read came
        /// in together: the clock is read once a read, where it was read for every frame
        /// (with the keepalive stage's reading, 3% of an event's instructions).
        var readTakenAt = ContinuousClock.now
        var readCounted = 0
        /// The `id` and `model` of the chunk before.
        var envelope = ChunkEnvelope()
        let mapError: @Sendable (any Error) -> RelayError

        mutating func next() async throws -> StreamEvent? {
            do {
                guard let frame = try await self.frames.next() else { return nil }
                return try self.event(from: frame)
            } catch {
                throw self.relayError(error)
            }
        }

        /// The event for `frame`, or the total or comments-only timeout, judged at the time
        /// the relay took up the read the frame came in.
        mutating func event(from frame: consuming SSEFrame) throws -> StreamEvent {
            if self.frames.reads != self.readCounted {
                self.readCounted = self.frames.reads
                self.readTakenAt = .now
            }
            let now = self.readTakenAt
            if let instant = self.deadlineInstant, now > instant { throw self.deadline!.error }
            if !frame.isCommentOnly {
                self.lastMeaningful = now
            } else if let timeout = self.commentsOnlyTimeout, now - self.lastMeaningful > timeout.limit {
                throw timeout.error
            }
            return StreamEvent(upstream: frame, envelope: &self.envelope)
        }

        /// What the stream throws for an error beneath it.
        func relayError(_ error: any Error) -> any Error {
            switch error {
            case let error as SSEDecoderError: RelayError.upstreamFailed("Upstream stream is malformed: \(error.description).")
            case is RelayError, is CancellationError: error
            default: self.mapError(error)
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        return AsyncIterator(
            frames: SSEFrameSequence(self.body, maximumEventSize: self.maximumEventSize).makeAsyncIterator(),
            commentsOnlyTimeout: self.commentsOnlyTimeout,
            deadline: self.deadline,
            deadlineInstant: self.deadline?.instant,
            mapError: self.mapError
        )
    }
}

extension UpstreamEventSequence.AsyncIterator: ReadyIterator, DeadlineIterator where Body.AsyncIterator: DeadlineIterator {
    nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
        do {
            switch try await self.frames.next(before: deadline) {
            case .element(let frame): return .element(try self.event(from: frame))
            case .end: return .end
            case .deadlinePassed: return .deadlinePassed
            }
        } catch {
            throw self.relayError(error)
        }
    }

    var canBeReady: Bool { self.frames.canBeReady }

    mutating func nextIfReady() throws -> NextBeforeDeadline<StreamEvent> {
        do {
            switch try self.frames.nextIfReady() {
            case .element(let frame): return .element(try self.event(from: frame))
            case .end: return .end
            case .deadlinePassed: return .deadlinePassed
            }
        } catch {
            throw self.relayError(error)
        }
    }
}
