import NIOCore
import NIOPosix
import Synchronization

/// A Swift task executor that runs jobs on one NIO event loop.
///
/// A request whose exchange prefers it runs all its nonisolated code on the loop that owns
/// its client's socket, and takes an upstream connection pool bound to that loop
/// (``UpstreamConnectionPools``), so its upstream connection lives there too: an event then goes
/// from the upstream's socket through the stages to the client's socket without waking
/// another thread. Connections' own tasks prefer their loop as well (``GatewayListener``). On Swift's global executor a one-chunk request made about 18
/// context switches (`perf stat`), most of the time it added before the first byte.
///
/// Only for a quiet loop, though (see ``ChatExchange``): NIO runs every queued task before
/// it polls its sockets again, so on a busy loop a new request's reads and the upstream's
/// head would wait behind every relay's work (time to first byte p99 at 256 streams went
/// from about 250 to 280–720 ms when every request ran on its loop).
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop
    /// Exchanges in flight on this loop's connections, wherever they run.
    let activeExchanges = Atomic<Int>(0)

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
