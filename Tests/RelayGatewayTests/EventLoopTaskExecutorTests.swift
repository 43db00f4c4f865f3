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
        let (onLoop, startedOnLoop) = await StreamTasks.$executor.withValue(executor) {
            await Task(executorPreference: executor) {
                let first = await Self.runsOn(loop)
                let started = await StreamTasks.start { await Self.runsOn(loop) }.value
                return (first, started)
            }.value
        }
        #expect(onLoop)
        #expect(startedOnLoop)
        // Without a preference, tasks run on Swift's global executor, not on the loop.
        #expect(await StreamTasks.start { await Self.runsOn(loop) }.value == false)
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        #expect(executors.executor(for: other.next()) == nil)
        try await other.shutdownGracefully()
    }
}
