import NIOCore
import NIOPosix

/// A Swift task executor that runs jobs on one NIO event loop.
///
/// Every request's exchange prefers the loop that owns its client's socket: it runs all
/// its nonisolated code there, and takes an upstream connection pool bound to that loop
/// (``UpstreamConnectionPools``), so its upstream connection lives there too. An event then
/// goes from the upstream's socket through the stages to the client's socket without
/// waking another thread. Connections' own tasks prefer their loop as well
/// (``GatewayListener``). On Swift's global executor a one-chunk request made about 18
/// context switches (`perf stat`), most of the time it added before the first byte.
///
/// Busy loops too: until 2026-11-28 a request went to Swift's global executor when its
/// loop already served another (NIO runs every queued task before it polls its sockets
/// again, and an earlier build's time to first byte at 256 streams suffered). With the
/// relay's rounds and flushes as they are now, keeping every request on its loop cost
/// 10 to 30% less CPU a chunk at 32 and 256 streams (fewer futex wake-ups between the
/// loops and the pool: system time a third lower), half as much for streams whose events
/// come 2 ms apart, and its time to first byte p99 at 256 was lower too (152 against
/// 175 ms in one run; see Benchmarks/README.md).
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
