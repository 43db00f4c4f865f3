import NIOCore
import NIOPosix
import RelayCore
import Testing

@testable import RelayGateway

@Suite("Requests on their connection's event loop")
struct EventLoopTaskExecutorTests {
    /// Nonisolated async code: where it runs is up to the task's executor preference.
    nonisolated static func runsOn(_ loop: any EventLoop) async -> Bool {
        await Task.yield()
        return loop.inEventLoop
    }

    @Test("a task that prefers a loop's executor runs on that loop, across suspensions, and so do the tasks StreamTasks starts in it")
    func runsOnTheLoop() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let executors = EventLoopTaskExecutors(group: group)
        let loop = group.next()
        let executor = try #require(executors.executor(for: loop))
        let (onLoop, startedOnLoop, childOnLoop) = try await StreamTasks.$executor.withValue(executor) {
            try await Task(executorPreference: executor) {
                let first = await Self.runsOn(loop)
                let started = await StreamTasks.start { await Self.runsOn(loop) }.value
                let child = try await StreamTasks.inChildTask { await Self.runsOn(loop) }
                return (first, started, child)
            }.value
        }
        #expect(onLoop)
        #expect(startedOnLoop)
        #expect(childOnLoop)
        // Without a preference, tasks run on Swift's global executor, not on the loop.
        #expect(await StreamTasks.start { await Self.runsOn(loop) }.value == false)
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        #expect(executors.executor(for: other.next()) == nil)
        try await other.shutdownGracefully()
    }

    @Test("StreamTasks.inChildTask: cancelling the task that waits for it cancels the child")
    func childTaskIsCancelledWithItsParent() async throws {
        let (started, starting) = AsyncStream.makeStream(of: Void.self)
        let parent = Task {
            try await StreamTasks.inChildTask {
                starting.yield()
                try await Task.sleep(for: .seconds(600))
            }
        }
        var iterator = started.makeAsyncIterator()
        await iterator.next()
        parent.cancel()
        await #expect(throws: CancellationError.self) { try await parent.value }
    }
}
