import HTTPTypes
import NIOCore
import RelayCore
import Testing

@testable import RelayGateway

/// `total_timeout` goes on after the response head: the upstream call's own timer keeps the
/// head and idle timeouts only, so the body is checked against the total as it arrives.
@Suite("An upstream's total timeout, after the head")
struct UpstreamDeadlineTests {
    static let frames = ["data: {\"choices\":[{\"delta\":{\"content\":\"Olá\"}}]}\n\n", "data: [DONE]\n\n"]

    static func body() -> AsyncStream<ByteBuffer> {
        AsyncStream { continuation in
            for frame in Self.frames { continuation.yield(ByteBuffer(string: frame)) }
            continuation.finish()
        }
    }

    static func response(deadline: UpstreamDeadline, stream: Bool) async throws -> ChatResponse {
        try await UpstreamResponseAdapter.makeResponse(
            status: .ok,
            contentType: stream ? "text/event-stream" : "application/json",
            passthroughHeaders: [:],
            body: Self.body(),
            streamRequested: stream,
            maximumEventSize: 65536,
            maximumBodySize: 65536,
            deadline: deadline,
            mapError: { _ in .upstreamFailed("mapped") }
        )
    }

    static func events(of response: ChatResponse) async throws -> [StreamEvent] {
        guard case .events(let events) = response.body else { throw RelayError.upstreamFailed("not a stream") }
        var relayed: [StreamEvent] = []
        for try await event in events { relayed.append(event) }
        return relayed
    }

    @Test("a stream still running at the deadline ends with upstream_timeout")
    func streamPastTheDeadline() async throws {
        let response = try await Self.response(deadline: UpstreamDeadline(instant: .now - .seconds(1), upstream: "slow"), stream: true)
        let error = await #expect(throws: RelayError.self) { try await Self.events(of: response) }
        #expect(error?.code == "upstream_timeout")
        #expect(error?.message == "Upstream 'slow' did not finish within its total timeout.")
    }

    @Test("a stream within its deadline is relayed whole")
    func streamWithinTheDeadline() async throws {
        let response = try await Self.response(deadline: UpstreamDeadline(instant: .now + .seconds(60), upstream: "slow"), stream: true)
        let events = try await Self.events(of: response)
        #expect(events.count == 2)
    }

    @Test("a whole body still arriving at the deadline is a 504, not a response")
    func wholeBodyPastTheDeadline() async throws {
        let error = await #expect(throws: RelayError.self) {
            _ = try await Self.response(deadline: UpstreamDeadline(instant: .now - .seconds(1), upstream: "slow"), stream: false)
        }
        #expect(error?.status == .gatewayTimeout)
    }
}
