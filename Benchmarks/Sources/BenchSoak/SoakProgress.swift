import Foundation
import NIOCore
import Synchronization

/// What the workers share: the next request to send, how many are done, and the samples
/// of the relay taken at each step of the run.
///
/// Each step (a tenth of the requests by default) ends at a barrier: requests of the next
/// step wait until every request of this one has finished, and the worker that finished the
/// last one samples the relay then. So every sample sees the relay at rest, with the same
/// connections open (the clients' kept-alive ones, the idle upstream pool), and samples
/// compare like with like; under load the descriptor count swings with the requests in flight.
final class SoakProgress: Sendable {
    let totalRequests: Int
    /// The kinds in the order they are sent, over and over (``SoakMix/cycle`` unless `--only`).
    let mix: [SoakRequestKind]
    private let pid: Int32
    private let requestsPerStep: Int
    private let startedAt = NIODeadline.now()
    private let nextIndex = Atomic<Int>(0)
    private let requestsDone = Atomic<Int>(0)
    private let contentChunks = Atomic<Int>(0)
    private let samples = Mutex<[DaemonSample]>([])
    private let barrier: Mutex<Barrier>

    private struct Barrier {
        /// Requests from this index on wait for the current step to finish.
        var limit: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    init(totalRequests: Int, mix: [SoakRequestKind], steps: Int, pid: Int32) {
        self.totalRequests = totalRequests
        self.mix = mix
        self.pid = pid
        self.requestsPerStep = max(1, totalRequests / max(1, steps))
        self.barrier = Mutex(Barrier(limit: min(totalRequests, self.requestsPerStep)))
    }

    /// The index of the next request to send, once its step has begun; nil when all have
    /// been handed out.
    func takeRequest() async -> Int? {
        let index = self.nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        guard index < self.totalRequests else { return nil }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let open = self.barrier.withLock { barrier in
                if index < barrier.limit { return true }
                barrier.waiting.append(continuation)
                return false
            }
            if open { continuation.resume() }
        }
        return index
    }

    func kind(of index: Int) -> SoakRequestKind { self.mix[index % self.mix.count] }

    /// Counts a finished request (whatever its outcome); the last of a step samples the
    /// relay and lets the next step begin.
    func finished(contentChunks: Int) {
        let chunks = self.contentChunks.wrappingAdd(contentChunks, ordering: .relaxed).newValue
        let done = self.requestsDone.wrappingAdd(1, ordering: .relaxed).newValue
        // No request at or past the limit has started, so `done` reaches it exactly when
        // the step's last request finishes.
        guard done == self.barrier.withLock({ $0.limit }) else { return }
        self.sample(label: "\(done * 100 / self.totalRequests)%", requestsDone: done, contentChunks: chunks)
        let released = self.barrier.withLock { barrier in
            barrier.limit = min(self.totalRequests, barrier.limit + self.requestsPerStep)
            defer { barrier.waiting = [] }
            return barrier.waiting
        }
        for continuation in released { continuation.resume() }
    }

    /// Takes a sample now, labelled `label` (also used for the start and the end).
    func sample(label: String, requestsDone: Int? = nil, contentChunks: Int? = nil) {
        let elapsed = Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9
        guard
            let sample = DaemonSample.read(
                pid: self.pid, label: label,
                requestsDone: requestsDone ?? self.requestsDone.load(ordering: .relaxed),
                contentChunks: contentChunks ?? self.contentChunks.load(ordering: .relaxed),
                secondsSinceStart: elapsed
            )
        else { return }
        self.samples.withLock { $0.append(sample) }
    }

    var allSamples: [DaemonSample] { self.samples.withLock { $0 } }

    var secondsSinceStart: Double { Double((NIODeadline.now() - self.startedAt).nanoseconds) / 1e9 }
}
