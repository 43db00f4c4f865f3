import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOPosix
import RelayCore
import Synchronization
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

    @Test("a connection's task runs on its connection's loop: the responder is called there")
    func connectionTaskRunsOnItsLoop() async throws {
        let directory = try TestPaths.temporaryDirectory("listener")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socketPath = directory + "/gw.sock"
        let onLoop = Mutex<[Bool]>([])
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = GatewayListener(
            socket: .path(socketPath),
            channel: HTTP1Channel(responder: { _, writer, channel in
                onLoop.withLock { $0.append(channel.eventLoop.inEventLoop) }
                try await Self.answerNoContent(writer)
            }),
            connectionLimit: ConnectionLimit(maximum: 16),
            eventLoopGroup: group,
            loopExecutors: EventLoopTaskExecutors(group: group),
            logger: Logger(label: "test")
        )
        let (listening, ready) = AsyncStream.makeStream(of: Void.self)
        let server = Task { try await listener.run(onListening: { ready.yield() }, onShutdownRequested: {}) }
        var iterator = listening.makeAsyncIterator()
        await iterator.next()
        // Several connections, so that both loops of the group get some.
        let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        let answers = try await onOwnThread { try RawUnixClient.exchangeAll(Array(repeating: request, count: 6), socketPath: socketPath, timeoutSeconds: 20) }
        #expect(answers.allSatisfy { $0.hasPrefix("HTTP/1.1 204") }, "\(answers)")
        #expect(onLoop.withLock { $0 } == Array(repeating: true, count: 6))
        server.cancel()
        _ = await withDeadline(.seconds(10)) { _ = try? await server.value }
    }

    static func answerNoContent(_ writer: consuming ResponseWriter) async throws {
        try await writer.writeResponse(HTTPResponse(status: .noContent))
    }

    @Test("upstream pools: on a loop, that loop's pool; elsewhere round-robin over all; max_connections split over them; shared by an origin")
    func upstreamPoolsPerLoop() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let loops = Array(group.makeIterator())
        let clients = UpstreamClients(eventLoopGroup: group)
        var settings = UpstreamSettings(name: "test", kind: .openAICompatible)
        settings.baseURL = "http://127.0.0.1:9/v1"
        settings.maxConnections = 1024
        let target = try clients.target(for: settings).get()
        #expect(target.requestURI == "/v1/chat/completions")
        #expect(target.hostHeader == "127.0.0.1:9")
        #expect(target.pools.count == loops.count)
        #expect(target.pools.connectionsPerPool == (1024 + loops.count - 1) / loops.count)
        for loop in loops {
            for _ in 0..<4 {
                let chosen = try await loop.submit { target.pools.next() }.get()
                #expect(chosen.eventLoop === loop, "a request on a loop gets that loop's pool")
            }
        }
        var seen = Set<ObjectIdentifier>()
        for _ in 0..<(2 * loops.count) { seen.insert(ObjectIdentifier(target.pools.next())) }
        #expect(seen.count == loops.count, "off the loops, every pool takes its turn")
        var another = UpstreamSettings(name: "other", kind: .openAICompatible)
        another.baseURL = "http://127.0.0.1:9/v1/"
        another.maxConnections = 1024
        #expect(try clients.target(for: another).get().pools === target.pools, "one origin, one set of pools")
        await clients.shutdown()
    }
}
