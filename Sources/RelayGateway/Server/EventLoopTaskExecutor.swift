import NIOCore
import NIOPosix

/// A Swift task executor that runs jobs on one NIO event loop.
///
/// A task that prefers it runs all its nonisolated code on that loop: a client
/// connection's requests then run on the loop that reads and writes the connection, and
/// AsyncHTTPClient (which asks the group for `any()` loop, the current one when called from
/// a loop) leases its upstream connection there too. An event then goes from the upstream's
/// socket through the stages to the client's socket on one thread, as in nginx's workers;
/// on Swift's global executor each event crossed threads twice (upstream loop → cooperative
/// pool → client loop), and those hops were most of the time added to a request's first
/// byte. Code run this way must not block: nothing in a request's path does.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}

/// One ``EventLoopTaskExecutor`` per loop of a group, made once and kept for the group's
/// life (a task holds its preferred executor unowned while it runs).
struct EventLoopTaskExecutors: Sendable {
    private let executors: [ObjectIdentifier: EventLoopTaskExecutor]

    init(group: MultiThreadedEventLoopGroup) {
        var executors: [ObjectIdentifier: EventLoopTaskExecutor] = [:]
        for loop in group.makeIterator() {
            executors[ObjectIdentifier(loop)] = EventLoopTaskExecutor(loop)
        }
        self.executors = executors
    }

    /// The executor for `eventLoop`, nil for a loop of another group.
    func executor(for eventLoop: any EventLoop) -> EventLoopTaskExecutor? {
        self.executors[ObjectIdentifier(eventLoop)]
    }
}
