import BenchSupport
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// `bench-upstream`: a loopback OpenAI-compatible server whose streams are scripted by the
/// model name (see ``StreamScript``), fast enough not to be what a benchmark measures.
@main
enum BenchUpstream {
    static let usage = """
        usage: bench-upstream [--host 127.0.0.1] [--port 0] [--port-file PATH] [--threads N]
          --port 0 picks a free port; it is printed and, with --port-file, written to PATH.
          Models: bench-cN[-eN][-dN][-bN]: N content chunks, N empty chunks before each,
          N ms between content chunks, flush every N events.
        """

    static func main() async {
        do {
            try await self.run(Array(CommandLine.arguments.dropFirst()))
        } catch {
            printToStandardError("bench-upstream: \(error)")
            exit(2)
        }
    }

    static func run(_ arguments: [String]) async throws {
        let options = try CommandLineOptions(arguments, flagNames: [], usage: self.usage)
        try options.rejectUnknown(besides: ["host", "port", "port-file", "threads"])
        let host = options.string("host", default: "127.0.0.1")
        let port = try options.integer("port", default: 0)
        let threads = try options.integer("threads", default: System.coreCount)
        let descriptors = FileDescriptorLimit.raiseToHardLimit()

        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let server = try await ServerBootstrap(group: group)
            // The load bursts thousands of connections at once; the kernel caps this at somaxconn.
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Accept a burst in one go: at NIO's default of 4 per wake-up, 256 new connections
            // wait behind dozens of turns of a loop that is busy streaming.
            .serverChannelOption(.maxMessagesPerRead, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Only the request decoder: responses leave ChatCompletionHandler as bytes.
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ChatCompletionHandler())
                }
            }
            .bind(host: host, port: port)
            .get()
        let boundPort = server.localAddress?.port ?? port
        if let portFile = options.string("port-file") {
            try Data("\(boundPort)\n".utf8).write(to: URL(fileURLWithPath: portFile), options: .atomic)
        }
        printToStandardOutputNow("bench-upstream listening on \(host):\(boundPort) (\(threads) threads, \(descriptors) descriptors)")
        try await server.closeFuture.get()
    }
}
