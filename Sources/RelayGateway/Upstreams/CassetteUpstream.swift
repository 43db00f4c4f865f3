import Foundation
import HTTPTypes
import NIOCore
public import RelayCore

/// How fast a cassette is replayed.
public enum CassettePacing: Sendable, Equatable {
    /// As fast as the client reads.
    case none
    /// Spread evenly over the duration it was recorded with.
    case recorded
    /// Spread evenly over this duration.
    case over(Duration)

    init(_ text: String) throws(ConfigError) {
        switch text {
        case "none": self = .none
        case "recorded": self = .recorded
        default:
            do {
                self = .over(try ConfigDuration(parsing: text).duration)
            } catch {
                throw ConfigError("pace '\(text)' is not none, recorded or a duration")
            }
        }
    }
}

/// An upstream that answers from recorded go-vcr cassettes instead of a provider.
///
/// A request finds its recording by meaning, not bytes: the model, the messages (as JSON
/// values, so key order and whitespace do not matter) and whether it streams. The same
/// question asked by the openai Python client finds the recording a Go client made. A
/// request that matches nothing gets a clear 404.
public struct CassetteUpstream: ChatUpstream {
    struct MatchKey: Hashable {
        var model: String
        var messages: JSONValue
        var stream: Bool
    }

    private let interactions: [MatchKey: Cassette.Interaction]
    private let pacing: CassettePacing
    private let maximumEventSize: Int
    public let name: String
    /// How many recordings were loaded.
    public var count: Int { self.interactions.count }

    public init(settings: UpstreamSettings, maximumEventSize: Int) throws(ConfigError) {
        var index: [MatchKey: Cassette.Interaction] = [:]
        for location in settings.cassettes {
            for file in try Cassette.files(at: location) {
                for interaction in try Cassette(path: file).interactions {
                    guard let json = interaction.requestJSON, let model = json["model"]?.stringValue,
                        let messages = json["messages"], interaction.url.hasSuffix("/chat/completions")
                    else { continue }
                    let key = MatchKey(model: model, messages: messages, stream: json["stream"]?.boolValue ?? false)
                    // The first recording of a question wins (later ones are usually SDK retries).
                    if index[key] == nil { index[key] = interaction }
                }
            }
        }
        self.interactions = index
        self.pacing = try CassettePacing(settings.pace)
        self.maximumEventSize = maximumEventSize
        self.name = settings.name
    }

    public func send(_ request: ChatRequest, context: StageContext) async throws -> ChatResponse {
        let model = request.upstreamModel ?? request.model
        let key = MatchKey(model: model, messages: request.member("messages") ?? .null, stream: request.stream)
        guard let interaction = self.interactions[key] else {
            throw RelayError(
                status: .notFound,
                message: "No recording in upstream '\(self.name)' matches this request (model '\(model)', "
                    + "\(request.messages.count) message(s), stream \(request.stream)).",
                type: "invalid_request_error",
                code: "cassette_not_found"
            )
        }
        context.record.update { $0.attempts += 1 }
        let body = ByteBuffer(string: interaction.responseBody)
        let pieces = Self.eventPieces(of: body)
        let gap: Duration?
        switch self.pacing {
        case .none: gap = nil
        case .recorded: gap = interaction.duration.map { $0 / max(1, pieces.count) }
        case .over(let total): gap = total / max(1, pieces.count)
        }
        return try await UpstreamResponseAdapter.makeResponse(
            status: HTTPResponse.Status(code: interaction.status),
            contentType: interaction.contentType,
            passthroughHeaders: [:],
            body: PacedBody(pieces: pieces, gap: gap),
            streamRequested: request.stream,
            maximumEventSize: self.maximumEventSize,
            maximumBodySize: Int.max,
            mapError: { RelayError.upstreamFailed("Cassette replay failed: \($0)") }
        )
    }

    /// Splits a recorded body after each blank line, the way a provider's writes arrive.
    static func eventPieces(of body: ByteBuffer) -> [ByteBuffer] {
        var pieces: [ByteBuffer] = []
        let view = body.readableBytesView
        var start = view.startIndex
        var index = view.startIndex
        while index < view.endIndex {
            if view[index] == UInt8(ascii: "\n"), index + 1 < view.endIndex, view[index + 1] == UInt8(ascii: "\n") {
                pieces.append(body.getSlice(at: start, length: index + 2 - start)!)
                index += 2
                start = index
                continue
            }
            index += 1
        }
        if start < view.endIndex { pieces.append(body.getSlice(at: start, length: view.endIndex - start)!) }
        return pieces
    }
}

/// Recorded body pieces, optionally with a pause before each one after the first.
struct PacedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let pieces: [ByteBuffer]
    let gap: Duration?

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<ByteBuffer>
        let gap: Duration?
        var first = true

        mutating func next() async throws -> ByteBuffer? {
            guard let piece = self.remaining.popFirst() else { return nil }
            if let gap = self.gap, !self.first { try await Task.sleep(for: gap) }
            self.first = false
            return piece
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.pieces[...], gap: self.gap) }
}
