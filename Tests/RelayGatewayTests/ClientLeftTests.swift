import NIOCore
import RelayCore
@testable import RelayGateway
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// How a request that ended with an error is recorded: as a client that left, or as a
/// failure of the gateway or the upstream (`client_disconnected` in the usage ledger).
@Suite("A request's end: the client left, or it failed")
struct ClientLeftTests {
    @Test("a hang-up seen as cancellation counts as the client leaving, before or after the head")
    func cancellation() {
        #expect(ChatExchange.clientLeft(after: CancellationError(), responseStarted: false, cancelled: true))
        #expect(ChatExchange.clientLeft(after: CancellationError(), responseStarted: true, cancelled: false))
    }

    @Test("a write that fails after the head counts as the client leaving, though its hang-up was not seen yet")
    func writeFailureAfterHead() {
        // What NIO throws for a write on a connection the client has closed.
        #expect(ChatExchange.clientLeft(after: ChannelError.ioOnClosedChannel, responseStarted: true, cancelled: false))
        #expect(ChatExchange.clientLeft(after: IOError(errnoCode: EPIPE, reason: "write"), responseStarted: true, cancelled: false))
    }

    @Test("an error before anything was written is the request's own failure, not a hang-up")
    func failureBeforeHead() {
        #expect(!ChatExchange.clientLeft(after: RelayError.modelNotFound("nope"), responseStarted: false, cancelled: false))
        #expect(!ChatExchange.clientLeft(after: ChannelError.ioOnClosedChannel, responseStarted: false, cancelled: false))
    }
}
