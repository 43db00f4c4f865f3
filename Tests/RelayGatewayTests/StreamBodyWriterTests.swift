import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import RelayGateway

/// The relay's writer to the client over a real socket pair: the far end is the client,
/// read (or not) with plain system calls.
@Suite("Writing a stream to the client")
struct StreamBodyWriterTests {
    /// Hands body parts to the socket as the bytes they hold (the HTTP encoder's place); a
    /// head as `HEAD <status>\n` and the end as `END\n`. Counts the flushes.
    final class BodyBytes: ChannelOutboundHandler, Sendable {
        typealias OutboundIn = HTTPResponsePart
        typealias OutboundOut = ByteBuffer
        let flushes = Atomic<Int>(0)

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            switch self.unwrapOutboundIn(data) {
            case .head(let head): context.write(self.wrapOutboundOut(ByteBuffer(string: "HEAD \(head.status.code)\n")), promise: promise)
            case .body(let bytes): context.write(self.wrapOutboundOut(bytes), promise: promise)
            case .end: context.write(self.wrapOutboundOut(ByteBuffer(string: "END\n")), promise: promise)
            }
        }

        func flush(context: ChannelHandlerContext) {
            self.flushes.add(1, ordering: .relaxed)
            context.flush()
        }
    }

    /// A channel on one end of a Unix socket pair, and the other end's descriptor.
    struct SocketPair {
        let group: MultiThreadedEventLoopGroup
        let channel: any Channel
        let bodyBytes: BodyBytes
        /// The channel's descriptor (NIO's; only read from here) and the client's.
        let server: Int32
        let client: Int32

        /// `http`: the channel has the server's HTTP encoding (NIO's encoder and the
        /// HTTP types codec, as Hummingbird sets them up) instead of ``BodyBytes``.
        static func make(http: Bool = false) async throws -> SocketPair {
            var descriptors: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &descriptors) == 0)
            // A client read that gets nothing for 30 s fails the test instead of hanging it.
            var timeout = timeval(tv_sec: 30, tv_usec: 0)
            setsockopt(descriptors[1], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let bodyBytes = BodyBytes()
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if http {
                            try channel.pipeline.syncOperations.addHandlers([HTTPResponseEncoder(), HTTP1ToHTTPServerCodec(secure: false)])
                        } else {
                            try channel.pipeline.syncOperations.addHandler(bodyBytes)
                        }
                    }
                }
                .withConnectedSocket(descriptors[0])
                .get()
            return SocketPair(group: group, channel: channel, bodyBytes: bodyBytes, server: descriptors[0], client: descriptors[1])
        }

        /// What the kernel may hold between the two ends: the sender's and receiver's buffers.
        var socketBuffers: Int {
            func option(_ descriptor: Int32, _ name: Int32) -> Int {
                var value: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(descriptor, SOL_SOCKET, name, &value, &length)
                return Int(value)
            }
            return option(self.server, SO_SNDBUF) + option(self.client, SO_RCVBUF)
        }

        /// Reads exactly `count` bytes from the client's end (nil if the socket ends first
        /// or nothing comes for 30 s).
        func read(_ count: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            var filled = 0
            while filled < count {
                let got = bytes.withUnsafeMutableBytes { Foundation.read(self.client, $0.baseAddress! + filled, count - filled) }
                guard got > 0 else { return nil }
                filled += got
            }
            return bytes
        }

        /// Reads until what has come ends with `suffix` (nil if the socket ends first or
        /// nothing comes for 30 s).
        func read(until suffix: [UInt8]) -> [UInt8]? {
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !received.reversed().starts(with: suffix.reversed()) {
                let got = chunk.withUnsafeMutableBytes { Foundation.read(self.client, $0.baseAddress!, $0.count) }
                guard got > 0 else { return nil }
                received += chunk[..<got]
            }
            return received
        }

        func close() async throws {
            try? await self.channel.close()
            Foundation.close(self.client)
            try await self.group.shutdownGracefully()
        }
    }

    /// Event `index` of a stream: 1 KB that says where it belongs.
    static func event(_ index: Int) -> [UInt8] {
        let label = Array("data: event \(index) ".utf8)
        return label + [UInt8](repeating: UInt8(ascii: "a") + UInt8(index % 26), count: 1024 - label.count - 1) + [UInt8(ascii: "\n")]
    }

    /// Whether `received` is events 0 to `count` - 1 (a Bool: a failed comparison of
    /// megabytes would print them).
    static func isStream(_ received: [UInt8]?, of count: Int) -> Bool {
        received == (0..<count).flatMap(Self.event)
    }

    @Test("A client that reads nothing stops the writer within the budget and the socket's buffers; when it reads, every byte arrives in order")
    func clientThatDoesNotRead() async throws {
        let pair = try await SocketPair.make()
        let writer = StreamBodyWriter(channel: pair.channel)
        // Either the writer waits long enough for the watch to call (what must happen), or
        // it gets everything written with nobody reading (unbounded): whichever comes first.
        let (outcomes, outcome) = AsyncStream.makeStream(of: String.self)
        writer.watchForStalls(timeout: .milliseconds(100)) { outcome.yield("stalled") }
        let events = 4096
        let accepted = Atomic<Int>(0)
        let writing = Task {
            for index in 0..<events {
                try await writer.write(pair.channel.allocator.buffer(bytes: Self.event(index)))
                accepted.add(1024, ordering: .relaxed)
            }
            outcome.yield("wrote everything")
        }
        var first: String?
        for await next in outcomes {
            first = next
            break
        }
        #expect(first == "stalled")
        let held = accepted.load(ordering: .relaxed)
        #expect(held <= StreamBodyWriter.budget + pair.socketBuffers + 1024, "accepted \(held) bytes with nobody reading")

        writer.stopWatchingForStalls()
        let received = try await onOwnThread { pair.read(events * 1024) }
        #expect(Self.isStream(received, of: events), "every event, in order, once")
        try await writing.value
        try await pair.close()
    }

    @Test("A client that keeps reading gets a long stream whole, however far past the budget")
    func clientThatReads() async throws {
        let pair = try await SocketPair.make()
        let writer = StreamBodyWriter(channel: pair.channel)
        let events = 2048
        // On a thread of its own: a blocking read on one of the cooperative pool's threads
        // (two on this machine) would starve the writer and every other test.
        let reading = Task { try await onOwnThread { pair.read(events * 1024) } }
        for index in 0..<events {
            try await writer.write(pair.channel.allocator.buffer(bytes: Self.event(index)))
        }
        #expect(Self.isStream(try await reading.value, of: events), "every event, in order, once")
        try await pair.close()
    }

    /// A short stream: the head goes with the first events, the end after the last, in
    /// order, and in two flushes (head, events, more events and end were four before).
    @Test("The head goes with the first events and the end after the last")
    func headAndEnd() async throws {
        let pair = try await SocketPair.make()
        let writer = StreamBodyWriter(channel: pair.channel, head: HTTPResponse(status: .ok))
        let reading = Task { try await onOwnThread { pair.read(9 + 3 * 1024 + 4) } }
        try await writer.write(contentsOf: [pair.channel.allocator.buffer(bytes: Self.event(0)), pair.channel.allocator.buffer(bytes: Self.event(1))])
        try await writer.write(pair.channel.allocator.buffer(bytes: Self.event(2)))
        try await writer.finish()
        try await writer.finish()  // once only
        let expected = Array("HEAD 200\n".utf8) + (0..<3).flatMap(Self.event) + Array("END\n".utf8)
        #expect(try await reading.value == expected)
        #expect(pair.bodyBytes.flushes.load(ordering: .relaxed) <= 3)
        try await pair.close()
    }

    /// The writer frames body parts itself and writes them below the HTTP handlers: what
    /// arrives must be the HTTP/1.1 response NIO's encoder would have written, head with
    /// chunked framing, each flush one chunk, then the last chunk.
    @Test("Through the server's HTTP encoding: a chunked HTTP/1.1 response whose chunks hold the events, in order, then the last chunk")
    func chunkedThroughTheEncoder() async throws {
        let pair = try await SocketPair.make(http: true)
        var head = HTTPResponse(status: .ok)
        head.headerFields[.contentType] = "text/event-stream"
        let writer = StreamBodyWriter(channel: pair.channel, head: head)
        let reading = Task { try await onOwnThread { pair.read(until: Array("\r\n0\r\n\r\n".utf8)) } }
        let short = Array("data: {}\n\n".utf8)
        try await writer.write(contentsOf: [pair.channel.allocator.buffer(bytes: short), pair.channel.allocator.buffer(bytes: Self.event(0))])
        for index in 1..<40 { try await writer.write(pair.channel.allocator.buffer(bytes: Self.event(index))) }
        try await writer.finish()
        let received = try #require(try await reading.value)
        let text = String(decoding: received, as: UTF8.self)
        let headEnd = try #require(text.range(of: "\r\n\r\n"))
        let headLines = text[..<headEnd.lowerBound].lowercased().split(separator: "\r\n")
        #expect(headLines.first == "http/1.1 200 ok")
        #expect(headLines.contains("transfer-encoding: chunked"))
        #expect(headLines.contains("content-type: text/event-stream"))
        // The body, unframed chunk by chunk: sizes in hex, each chunk's bytes, CRLF after each.
        var body = Array(received[text.utf8.distance(from: text.utf8.startIndex, to: headEnd.upperBound)...])
        var data: [UInt8] = []
        var chunks = 0
        while true {
            let lineEnd = try #require(body.indices.dropLast().first { body[$0] == 13 && body[$0 + 1] == 10 })
            let size = try #require(Int(String(decoding: body[..<lineEnd], as: UTF8.self), radix: 16))
            body.removeFirst(lineEnd + 2)
            if size == 0 { break }
            data += body[..<size]
            #expect(Array(body[size..<(size + 2)]) == [13, 10], "CRLF after chunk \(chunks)")
            body.removeFirst(size + 2)
            chunks += 1
        }
        #expect(body == [13, 10], "the last chunk's CRLF ends the response")
        #expect(data == short + (0..<40).flatMap(Self.event), "every event, in order, once")
        #expect(chunks >= 1)
        try await pair.close()
    }

    @Test("A part is framed as its size in hex, CRLF, its bytes and CRLF", arguments: [1, 15, 16, 255, 256, 4096, 65535, 1 << 20])
    func chunkFraming(size: Int) {
        var part = ByteBuffer(repeating: 0xEE, count: StreamBodyWriter.chunkHeaderRoom)
        part.writeRepeatingByte(UInt8(ascii: "x"), count: size)
        StreamBodyWriter.frameChunk(&part)
        let expected = Array((String(size, radix: 16) + "\r\n").utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: size) + [13, 10]
        #expect(Array(part.readableBytesView) == expected)
    }

    /// On the connection's loop, `atOnce` flushes before `write` returns; without it the
    /// flush waits for the loop's next task (so that calls made one event at a time in one
    /// tick go out in one write). Checked on the loop, where that task cannot have run yet.
    @Test("On the connection's loop, a write at once is flushed before it returns; a write without waits for the loop's next task")
    func flushAtOnceOnTheLoop() async throws {
        let pair = try await SocketPair.make()
        let executor = EventLoopTaskExecutor(pair.channel.eventLoop)
        let writer = StreamBodyWriter(channel: pair.channel)
        let (onLoop, atOnce, deferred) = try await Task(executorPreference: executor) { () async throws -> (Bool, Int, Int) in
            try await writer.write(contentsOf: [pair.channel.allocator.buffer(bytes: Self.event(0))], atOnce: true)
            let onLoop = pair.channel.eventLoop.inEventLoop
            let atOnce = pair.bodyBytes.flushes.load(ordering: .relaxed)
            try await writer.write(contentsOf: [pair.channel.allocator.buffer(bytes: Self.event(1))])
            return (onLoop, atOnce, pair.bodyBytes.flushes.load(ordering: .relaxed))
        }.value
        #expect(onLoop)
        #expect(atOnce == 1, "flushed before the write returned")
        #expect(deferred == 1, "the second flush waits for the loop's next task")
        #expect(Self.isStream(try await onOwnThread { pair.read(2 * 1024) }, of: 2), "both events, in order")
        try await pair.close()
    }

    @Test("A head with no events yet goes out at once")
    func headAlone() async throws {
        let pair = try await SocketPair.make()
        let writer = StreamBodyWriter(channel: pair.channel, head: HTTPResponse(status: .ok))
        try await writer.write(contentsOf: [ByteBuffer]())
        #expect(try await onOwnThread { pair.read(9) } == Array("HEAD 200\n".utf8))
        try await writer.finish()
        #expect(try await onOwnThread { pair.read(4) } == Array("END\n".utf8))
        try await pair.close()
    }

    @Test("Once the client has closed its end, writes fail rather than vanish")
    func clientThatLeft() async throws {
        let pair = try await SocketPair.make()
        let writer = StreamBodyWriter(channel: pair.channel)
        Foundation.close(pair.client)
        var failure: (any Error)?
        for index in 0..<4096 where failure == nil {
            do {
                try await writer.write(pair.channel.allocator.buffer(bytes: Self.event(index)))
            } catch {
                failure = error
            }
        }
        #expect(failure != nil, "4 MB written to a closed socket with no error")
        try? await pair.channel.closeFuture.get()
        try await pair.group.shutdownGracefully()
    }
}
