import Foundation
import NIOCore
@testable import RelayCore
@testable import RelayGateway
import Testing

/// The relay's JSON parser against `JSONDecoder` on every JSON document the recordings
/// hold (request bodies, whole answers and each streamed event's data), and the chunk
/// scanner against facts read from the parsed tree for every streamed event.
@Suite("JSON parser over the recorded corpus")
struct JSONParserCorpusTests {
    @Test("Shared corpus: the same values as JSONDecoder",
        .enabled(if: CorpusPaths.corpusExists, CorpusPaths.skipComment),
        arguments: CorpusPaths.corpusCassettes)
    func corpus(name: String) async throws {
        #expect(try await Self.compare(path: CorpusPaths.corpusPath(name)) > 0)
    }

    @Test("Project fixtures: the same values as JSONDecoder", arguments: CorpusPaths.fixtureCassettes)
    func fixtures(name: String) async throws {
        #expect(try await Self.compare(path: CorpusPaths.fixturePath(name)) > 0)
    }

    /// Compares every document in the cassette; returns how many there were.
    static func compare(path: String) async throws -> Int {
        let cassette = try Cassette(path: path)
        var documents: [String] = []
        var streams: [[SSEFrame]] = []
        for interaction in cassette.interactions {
            if let request = interaction.requestJSON { documents.append(request.serialized()) }
            if StreamReplay.isEventStream(interaction) {
                let frames = try await StreamReplay.frames([ByteBuffer(string: interaction.responseBody)])
                streams.append(frames)
                for frame in frames {
                    guard let data = frame.data, data.readableBytesView.first == UInt8(ascii: "{") else { continue }
                    documents.append(String(buffer: data))
                }
            } else if interaction.responseBody.hasPrefix("{") {
                documents.append(interaction.responseBody)
            }
        }
        for document in documents {
            let event = StreamEvent(upstream: SSEFrame(raw: ByteBuffer(string: "data: \(document)\n\n"), data: ByteBuffer(string: document)))
            let reference = ChunkScanner.reference(Array(document.utf8))
            #expect(event.kind == (reference?.kind ?? .other), "\(path): \(document.prefix(200))")
            #expect(event.facts == reference?.facts, "\(path): \(document.prefix(200))")
        }
        // In stream order, as the relay reads them: each chunk after the one before (whose
        // template it may match) gets the answer it gets alone.
        for frames in streams {
            var envelope = ChunkEnvelope()
            for frame in frames {
                let event = StreamEvent(upstream: frame, envelope: &envelope)
                let alone = StreamEvent(upstream: frame)
                let document = frame.data.map { String(buffer: $0) } ?? ""
                #expect(event.kind == alone.kind, "\(path), in stream order: \(document.prefix(200))")
                #expect(event.facts == alone.facts, "\(path), in stream order: \(document.prefix(200))")
            }
        }
        for document in documents {
            let reference = try JSONDecoder().decode(JSONValue.self, from: Data(document.utf8))
            let parsed = try JSONValue(parsing: Array(document.utf8))
            #expect(parsed == reference, "\(path): \(document.prefix(200))")
            #expect(try JSONValue(parsing: Array(parsed.serialized().utf8)) == parsed, "round trip: \(document.prefix(200))")
        }
        return documents.count
    }
}
