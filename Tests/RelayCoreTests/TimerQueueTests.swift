@testable import RelayCore
import Testing

/// The shared timer for per-request timeouts: sleeps end when due, in deadline order
/// across durations, and a cancelled sleep ends at once and keeps nothing.
///
/// The tests learn that a sleep is queued from `onRegistered`, never by polling: a loop of
/// `Task.yield()` can hold both of this machine's cooperative threads and starve the timer.
@Suite("TimerQueue: sleeps that keep nothing once cancelled")
struct TimerQueueTests {
    /// Starts `count` sleeps of `duration` in tasks and returns once all are queued.
    static func queuedSleeps(_ count: Int, of duration: Duration, on timers: TimerQueue) async -> [Task<Void, any Error>] {
        let (queued, signal) = AsyncStream<Void>.makeStream()
        let sleeps = (0..<count).map { _ in
            Task { try await timers.sleep(for: duration, onRegistered: { signal.yield() }) }
        }
        var remaining = count
        for await _ in queued {
            remaining -= 1
            if remaining == 0 { break }
        }
        return sleeps
    }

    @Test("A sleep ends when due")
    func sleepEnds() async throws {
        let timers = TimerQueue()
        let clock = ContinuousClock()
        let start = clock.now
        try await timers.sleep(for: .milliseconds(20))
        #expect(clock.now - start >= .milliseconds(20))
        #expect(timers.waiting == 0)
    }

    @Test("A shorter sleep queued later wakes first (the timer is set earlier)", .timeLimit(.minutes(1)))
    func earlierDeadlineRearms() async throws {
        let timers = TimerQueue()
        // Long enough that a loaded machine cannot delay the short one past it.
        let long = await Self.queuedSleeps(1, of: .seconds(3_600), on: timers)[0]
        try await timers.sleep(for: .milliseconds(10))
        #expect(timers.waiting == 1, "the long sleep is still queued when the short one wakes")
        long.cancel()
        await #expect(throws: CancellationError.self) { try await long.value }
    }

    @Test("A cancelled sleep throws CancellationError at once and is forgotten")
    func cancelledSleepIsForgotten() async throws {
        let timers = TimerQueue()
        let sleeps = await Self.queuedSleeps(1_000, of: .seconds(3_600), on: timers)
        #expect(timers.waiting == 1_000)
        for sleep in sleeps { sleep.cancel() }
        for sleep in sleeps {
            await #expect(throws: CancellationError.self) { try await sleep.value }
        }
        #expect(timers.waiting == 0)
    }

    @Test("A task cancelled before it sleeps does not sleep")
    func alreadyCancelled() async throws {
        let timers = TimerQueue()
        let sleep = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await timers.sleep(for: .seconds(3_600))
        }
        await #expect(throws: CancellationError.self) { try await sleep.value }
        #expect(timers.waiting == 0)
    }

    @Test("Cancelled entries ahead of a live one do not hold it up")
    func liveBehindCancelled() async throws {
        let timers = TimerQueue()
        let cancelled = await Self.queuedSleeps(1, of: .milliseconds(30), on: timers)[0]
        cancelled.cancel()
        _ = try? await cancelled.value
        try await timers.sleep(for: .milliseconds(30))
        #expect(timers.waiting == 0)
    }

    @Test("A scheduled action runs when due; a cancelled one never runs and is forgotten", .timeLimit(.minutes(1)))
    func scheduledActions() async throws {
        let timers = TimerQueue()
        let (ran, record) = AsyncStream<String>.makeStream()
        let cancelled = timers.schedule(after: .milliseconds(10)) { record.yield("cancelled") }
        timers.cancel(cancelled)
        // Same duration, queued later: due after the cancelled one, in the same FIFO, so
        // had the cancelled one run it would have been recorded first.
        _ = timers.schedule(after: .milliseconds(10)) { record.yield("kept") }
        var iterator = ran.makeAsyncIterator()
        #expect(await iterator.next() == "kept")
        #expect(timers.waiting == 0)
    }
}
