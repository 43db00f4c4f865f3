import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RelayCore
import Synchronization
import Testing

@testable import RelayGateway

/// The relay's upstream client (UpstreamConnectionPool, UpstreamCall) against a raw NIO
/// HTTP/1.1 server, over TLS too, that counts its connections and misbehaves on request.
@Suite("Upstream connections", .timeLimit(.minutes(1)))
struct UpstreamConnectionTests {
    @Test("requests in turn share one keep-alive connection")
    func keepAlive() async throws {
        try await withServer(.answerEverything) { server, pools in
            for _ in 0..<3 {
                let answer = try await Self.fetch(pools)
                #expect(answer == "hello")
            }
            #expect(server.connections == 1)
        }
    }

    @Test("an idle connection the upstream closes as a request arrives is replaced, and the request is answered")
    func staleConnection() async throws {
        try await withServer(.closeOnSecondRequest) { server, pools in
            let first = try await Self.fetch(pools)
            // Goes out on the kept connection, which the server closes without a byte.
            let second = try await Self.fetch(pools)
            #expect(first == "hello")
            #expect(second == "hello")
            #expect(server.connections == 2)
            #expect(server.requests == 3)
        }
    }

    @Test("a fresh connection closed before the head fails the request clearly, and is not retried")
    func closedBeforeHead() async throws {
        try await withServer(.closeEverything) { server, pools in
            await #expect {
                try await Self.fetch(pools)
            } throws: { error in
                (error as? RelayError)?.message.contains("closed the connection before the response was complete") == true
            }
            #expect(server.requests == 1)
        }
    }

    @Test("no more connections than the pool allows: requests wait for one")
    func connectionLimit() async throws {
        try await withServer(.answerEverything, maximumConnections: 1) { server, pools in
            try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<4 { group.addTask { try await Self.fetch(pools) } }
                for try await body in group { #expect(body == "hello") }
            }
            #expect(server.connections == 1)
            #expect(server.requests == 4)
        }
    }

    @Test("an upstream that sends no head within the head timeout fails with that timeout")
    func headTimeout() async throws {
        try await withServer(.neverAnswer) { _, pools in
            await #expect {
                try await Self.fetch(pools, headTimeout: .milliseconds(200))
            } throws: { error in
                (error as? RelayError)?.message == "no head in time"
            }
        }
    }

    @Test("a connection idle for its lifetime is closed; the next request opens another")
    func idleLifetime() async throws {
        try await withServer(.answerEverything, idleLifetime: .milliseconds(50)) { server, pools in
            let first = try await Self.fetch(pools)
            #expect(first == "hello")
            await server.waitForClosedConnections(1)
            let second = try await Self.fetch(pools)
            #expect(second == "hello")
            #expect(server.connections == 2)
        }
    }

    @Test("https: the request goes over TLS, the certificate is checked, and the connection is kept")
    func tls() async throws {
        let certificates = try NIOSSLCertificate.fromPEMFile(TestPaths.repositoryRoot + "/Tests/Fixtures/tls/localhost.cert.pem")
        let certificate = try #require(certificates.first)
        let key = try NIOSSLPrivateKey(file: TestPaths.repositoryRoot + "/Tests/Fixtures/tls/localhost.key.pem", format: .pem)
        let server = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        var trusting = TLSConfiguration.makeClientConfiguration()
        trusting.trustRoots = .certificates([certificate])
        try await withServer(.answerEverything, tls: (server, trusting)) { server, pools in
            for _ in 0..<2 {
                let answer = try await Self.fetch(pools)
                #expect(answer == "hello")
            }
            #expect(server.connections == 1)
        }
        // The system's trust roots do not know the test's certificate: no request goes out.
        try await withServer(.answerEverything, tls: (server, TLSConfiguration.makeClientConfiguration())) { server, pools in
            await #expect(throws: NIOSSLError.self) { try await Self.fetch(pools) }
            #expect(server.requests == 0)
        }
    }

    @Test("a body read with a deadline: the deadline passes, and the part that comes after it is not lost")
    func bodyDeadline() async throws {
        try await withServer(.pauseMidBody) { server, pools in
            let (call, body) = Self.makeCall(pools)
            let response = try await call.start()
            #expect(response.status == .ok)
            var parts = body.makeAsyncIterator()
            var text = ""
            while text != "hel" {
                guard case .element(let part) = try await parts.next(before: .now + .seconds(10)) else {
                    Issue.record("no first part")
                    return
                }
                text += String(buffer: part)
            }
            // The server holds the rest back until told.
            guard case .deadlinePassed = try await parts.next(before: .now + .milliseconds(50)) else {
                Issue.record("the wait did not end at its deadline")
                return
            }
            server.resumePausedResponses()
            reading: while true {
                switch try await parts.next(before: .now + .seconds(10)) {
                case .element(let part): text += String(buffer: part)
                case .end: break reading
                case .deadlinePassed: Issue.record("no rest within 10 s"); return
                }
            }
            #expect(text == "hello")
        }
    }

    // MARK: Support

    /// One request; the body as text.
    static func fetch(_ pools: UpstreamConnectionPools, headTimeout: Duration = .seconds(10)) async throws -> String {
        let (call, body) = Self.makeCall(pools, headTimeout: headTimeout)
        let response = try await call.start()
        #expect(response.status == .ok)
        var text = ""
        for try await part in body { text += String(buffer: part) }
        return text
    }

    static func makeCall(_ pools: UpstreamConnectionPools, headTimeout: Duration = .seconds(10)) -> (call: UpstreamCall, body: UpstreamBody) {
        let head = try! HTTP1RequestHead(method: .POST, uri: "/v1/chat/completions", headers: ["Host": "localhost"])
        return UpstreamCall.make(
            pool: pools.next(),
            upstream: "test",
            head: head.bytes(accept: "application/json", contentLength: 2),
            body: ByteBuffer(string: "{}"),
            timeouts: .init(
                head: headTimeout,
                headError: .upstreamTimeout("no head in time"),
                idle: .seconds(10),
                idleError: .upstreamTimeout("idle")
            )
        )
    }

    /// `tls`: the server's configuration and the client's, for an `https://` upstream.
    func withServer(
        _ behaviour: RawServer.Behaviour,
        maximumConnections: Int = 8,
        tls: (server: TLSConfiguration, client: TLSConfiguration)? = nil,
        idleLifetime: TimeAmount = .seconds(60),
        _ body: (RawServer, UpstreamConnectionPools) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await RawServer.start(behaviour, tls: try tls.map { try NIOSSLContext(configuration: $0.server) }, group: group)
        let pools = try UpstreamConnectionPools(
            eventLoopGroup: group, host: "127.0.0.1", port: server.port, tls: tls?.client, connectTimeout: .seconds(5),
            maximumConnections: maximumConnections, idleLifetime: idleLifetime
        )
        do {
            try await body(server, pools)
        } catch {
            await pools.shutdown()
            try await server.stop()
            try await group.shutdownGracefully()
            throw error
        }
        await pools.shutdown()
        try await server.stop()
        try await group.shutdownGracefully()
    }
}

/// A bare HTTP/1.1 server: answers `hello` (keep-alive) or misbehaves as told, and counts.
final class RawServer: Sendable {
    enum Behaviour: Sendable {
        case answerEverything
        /// Answers the first request on a connection; closes the connection, without a
        /// byte, when a second one comes on it (its keep-alive ran out as the request came).
        case closeOnSecondRequest
        case closeEverything
        case neverAnswer
        /// Answers `hel` (chunked), and the rest when ``resumePausedResponses()`` is called.
        case pauseMidBody
    }

    private let channel: any Channel
    private let counts = Mutex((connections: 0, requests: 0))
    private let closes = Mutex((count: 0, waiters: [(Int, CheckedContinuation<Void, Never>)]()))
    private let pausedResponses = Mutex([@Sendable () -> Void]())
    let port: Int

    var connections: Int { self.counts.withLock { $0.connections } }
    var requests: Int { self.counts.withLock { $0.requests } }

    /// Returns once `count` connections have closed.
    func waitForClosedConnections(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = self.closes.withLock { state in
                if state.count >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    /// Sends the rest of every response paused so far.
    func resumePausedResponses() {
        for resume in self.pausedResponses.withLock({ $0 }) { resume() }
    }

    fileprivate func connectionClosed() {
        let ready = self.closes.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count += 1
            let count = state.count
            let ready = state.waiters.filter { $0.0 <= count }.map(\.1)
            state.waiters.removeAll { $0.0 <= count }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    private init(channel: any Channel) {
        self.channel = channel
        self.port = channel.localAddress?.port ?? 0
    }

    static func start(_ behaviour: Behaviour, tls: NIOSSLContext? = nil, group: any EventLoopGroup) async throws -> RawServer {
        let box = ServerBox()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    box.server?.counts.withLock { $0.connections += 1 }
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(behaviour: behaviour, box: box))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        let server = RawServer(channel: channel)
        box.set(server)
        return server
    }

    func stop() async throws {
        try await self.channel.close()
    }

    private final class ServerBox: Sendable {
        private let value = Mutex<RawServer?>(nil)
        var server: RawServer? { self.value.withLock { $0 } }
        func set(_ server: RawServer) { self.value.withLock { $0 = server } }
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let behaviour: Behaviour
        let box: ServerBox
        var requestsHere = 0

        init(behaviour: Behaviour, box: ServerBox) {
            self.behaviour = behaviour
            self.box = box
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.box.server?.connectionClosed()
            context.fireChannelInactive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = self.unwrapInboundIn(data) else { return }
            self.requestsHere += 1
            self.box.server?.counts.withLock { $0.requests += 1 }
            switch self.behaviour {
            case .closeEverything:
                context.close(promise: nil)
                return
            case .closeOnSecondRequest where self.requestsHere > 1:
                context.close(promise: nil)
                return
            case .neverAnswer:
                return
            case .pauseMidBody:
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hel")))), promise: nil)
                let rest = NIOLoopBound(context, eventLoop: context.eventLoop)
                let loop = context.eventLoop
                self.box.server?.pausedResponses.withLock {
                    $0.append {
                        loop.execute {
                            rest.value.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "lo")))), promise: nil)
                            rest.value.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                        }
                    }
                }
                return
            case .answerEverything, .closeOnSecondRequest:
                break
            }
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Content-Length", value: "5")
            head.headers.add(name: "Content-Type", value: "text/plain")
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "hello")))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
