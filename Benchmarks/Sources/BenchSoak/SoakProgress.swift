import Foundation
import NIOCore
import Synchronization

/// What the workers share: the next request to send, how many are done, and the samples
/// of the relay taken at each step of the run.
///
/// The sample at each step (a tenth of the requests by default) is taken by the worker whose
/// request completed that step, so that samples follow the load, not the clock.
final class SoakProgress: Sendable {
    let totalRequests: Int
    private let pid: Int32
    private let requestsPerStep: Int
    private let startedAt = NIODeadline.now()
    private let nextIndex = Atomic<Int>(0)
    private let requestsDone = Atomic<Int>(0)
    private let contentChunks = Atomic<Int>(0)
    private let samples = Mutex<[DaemonSample]>([])

    init(totalRequests: Int, steps: Int, pid: Int32) {
        self.totalRequests = totalRequests
        self.pid = pid
        self.requestsPerStep = max(1, totalRequests / max(1, steps))
    }

    /// The index of the next request to send, or nil when all have been handed out.
    func takeRequest() -> Int? {
        let index = self.nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < self.totalRequests ? index : nil
    }

    /// Counts a finished request (whatever its outcome) and samples the relay at each step.
    func finished(contentChunks: Int) {
        let chunks = self.contentChunks.wrappingAdd(contentChunks, ordering: .relaxed).newValue
        let done = self.requestsDone.wrappingAdd(1, ordering: .relaxed).newValue
        if done % self.requestsPerStep == 0 || done == self.totalRequests {
            let percent = done * 100 / self.totalRequests
            self.sample(label: "\(percent)%", requestsDone: done, contentChunks: chunks)
        }
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
