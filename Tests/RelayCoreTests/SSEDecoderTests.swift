import NIOCore
import Testing

@testable import RelayCore

@Suite("SSEDecoder")
struct SSEDecoderTests {
    /// Decodes `text` whole, one byte at a time and through ``SSEFrameSequence``,
    /// expects the three to agree, and returns the frames.
    private func decodeAllWays(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> [FrameSnapshot] {
        let whole = try SSEFeed.frames(SSEFeed.whole(text)).snapshots
        let bytewise = try SSEFeed.frames(SSEFeed.bytewise(text)).snapshots
        let viaAsync = try await SSEFeed.framesAsync(SSEFeed.bytewise(text)).snapshots
        #expect(bytewise == whole, "one byte at a time differs from whole", sourceLocation: sourceLocation)
        #expect(viaAsync == whole, "SSEFrameSequence differs from the hand-driven decoder", sourceLocation: sourceLocation)
        return whole
    }

    // MARK: Line ends

    @Test("LF line ends")
    func lfLineEnds() async throws {
        let frames = try await decodeAllWays("data: a\n\ndata: b\n\n")
        #expect(frames == [FrameSnapshot(raw: "data: a\n\n", data: "a"), FrameSnapshot(raw: "data: b\n\n", data: "b")])
    }

    @Test("CR line ends; a blank line ended by a lone CR is stored as CR LF")
    func crLineEnds() async throws {
        let frames = try await decodeAllWays("data: a\r\rdata: b\revent: e\r\r")
        #expect(
            frames == [
                FrameSnapshot(raw: "data: a\r\r\n", data: "a"),
                FrameSnapshot(raw: "data: b\revent: e\r\r\n", data: "b", eventType: "e"),
            ])
    }

    @Test("CR LF line ends")
    func crlfLineEnds() async throws {
        let frames = try await decodeAllWays("data: a\r\ndata: b\r\n\r\nid: 7\r\n\r\n")
        #expect(frames == [FrameSnapshot(raw: "data: a\r\ndata: b\r\n\r\n", data: "a\nb"), FrameSnapshot(raw: "id: 7\r\n\r\n", id: "7")])
    }

    @Test("Mixed LF, CR and CR LF in one stream")
    func mixedLineEnds() async throws {
        let frames = try await decodeAllWays("data: a\rdata: b\r\ndata: c\n\r\ndata: d\n\r")
        #expect(frames.map(\.data) == ["a\nb\nc", "d"])
    }

    @Test("A CR LF split across two reads is one line end", arguments: [
        ["data: a\r", "\n\r\ndata: b\r\n\r\n"],  // split inside the CR LF that ends a field line
        ["data: a\r\n\r", "\ndata: b\r\n\r\n"],  // split inside the CR LF that ends the block
        ["data: a\r\n\r", "", "\n", "data: b\r\n\r\n"],  // with an empty read in between
    ])
    func crlfSplitAcrossReads(reads: [String]) throws {
        let split = try SSEFeed.frames(reads.map { ByteBuffer(string: $0) }).snapshots
        let whole = try SSEFeed.frames(SSEFeed.whole(reads.joined())).snapshots
        #expect(split == whole)
        #expect(split == [FrameSnapshot(raw: "data: a\r\n\r\n", data: "a"), FrameSnapshot(raw: "data: b\r\n\r\n", data: "b")])
    }

    // MARK: Comments

    @Test("A comment-only block (OpenRouter's processing notice) is one comment frame")
    func commentOnlyBlock() async throws {
        let frames = try await decodeAllWays(": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\n")
        #expect(frames == [FrameSnapshot(raw: ": OPENROUTER PROCESSING\n\n", hasComment: true), FrameSnapshot(raw: "data: {\"a\":1}\n\n", data: "{\"a\":1}")])
        let decoded = try SSEFeed.frames(SSEFeed.whole(": OPENROUTER PROCESSING\n\n"))
        #expect(decoded.count == 1)
        #expect(decoded.first?.isCommentOnly == true)
    }

    @Test("A comment inside a data block marks the block but is not data")
    func commentInsideDataBlock() async throws {
        let text = "data: a\n: keepalive\ndata: b\n\n"
        let frames = try SSEFeed.frames(SSEFeed.whole(text))
        #expect(frames.snapshots == [FrameSnapshot(raw: text, data: "a\nb", hasComment: true)])
        #expect(frames.first?.isCommentOnly == false)
        _ = try await decodeAllWays(text)
    }

    @Test("A bare ':' line is a comment")
    func bareColon() async throws {
        let frames = try await decodeAllWays(":\n\n")
        #expect(frames == [FrameSnapshot(raw: ":\n\n", hasComment: true)])
    }

    // MARK: Fields

    @Test("Several data lines join with LF")
    func multiLineData() async throws {
        let frames = try await decodeAllWays("data: {\ndata: \"a\": 1\ndata:\ndata: }\n\n")
        #expect(frames.map(\.data) == ["{\n\"a\": 1\n\n}"])
    }

    @Test("event, id and retry are read; a retry that is not a number is ignored")
    func eventIdRetry() async throws {
        let frames = try await decodeAllWays("event: message\nid: 42\nretry: 1500\ndata: x\n\nretry: soon\ndata: y\n\n")
        #expect(
            frames == [
                FrameSnapshot(raw: "event: message\nid: 42\nretry: 1500\ndata: x\n\n", data: "x", eventType: "message", id: "42", retry: 1500),
                FrameSnapshot(raw: "retry: soon\ndata: y\n\n", data: "y"),
            ])
    }

    @Test("A retry that is not a number does not undo an earlier one in the same event")
    func invalidRetryIsIgnored() async throws {
        // The spec: a retry value that is not all ASCII digits is ignored.
        let frames = try await decodeAllWays("retry: 1500\nretry: soon\ndata: x\n\n")
        #expect(frames.map(\.retry) == [1500])
    }

    @Test("A block with only event, id or retry is delivered without data", arguments: [
        ("event: ping\n\n", FrameSnapshot(raw: "event: ping\n\n", eventType: "ping")),
        ("id: 9\n\n", FrameSnapshot(raw: "id: 9\n\n", id: "9")),
        ("retry: 10\n\n", FrameSnapshot(raw: "retry: 10\n\n", retry: 10)),
    ])
    func fieldOnlyBlocks(text: String, expected: FrameSnapshot) async throws {
        #expect(try await decodeAllWays(text) == [expected])
    }

    @Test("Only one space after the colon is dropped; 'data:' without a space works")
    func spaceAfterColon() async throws {
        let frames = try await decodeAllWays("data:x\n\ndata:  two\n\ndata:\n\n")
        #expect(frames.map(\.data) == ["x", " two", ""])
    }

    @Test("A line with no colon is a field name with an empty value")
    func fieldWithoutColon() async throws {
        let frames = try await decodeAllWays("data\n\nevent\ndata: a\n\nbogus\ndata: b\n\n")
        #expect(
            frames == [
                FrameSnapshot(raw: "data\n\n", data: ""),
                FrameSnapshot(raw: "event\ndata: a\n\n", data: "a", eventType: ""),
                FrameSnapshot(raw: "bogus\ndata: b\n\n", data: "b"),
            ])
    }

    @Test("Unknown fields are ignored but kept in raw")
    func unknownFieldsStayInRaw() async throws {
        let frames = try await decodeAllWays("x-vendor: 1\ndata: a\n\n")
        #expect(frames == [FrameSnapshot(raw: "x-vendor: 1\ndata: a\n\n", data: "a")])
    }

    @Test("A value may hold colons and multi-byte UTF-8, even split inside a character")
    func colonsAndUTF8InValue() async throws {
        let frames = try await decodeAllWays("data: {\"content\":\"Olá 😀\"}\n\n")
        #expect(frames.map(\.data) == ["{\"content\":\"Olá 😀\"}"])
    }

    // MARK: Blank lines, BOM, end of input

    @Test("Stray blank lines produce nothing", arguments: ["\n", "\n\n\n", "\r\r\n\r", "\r\n\r\n"])
    func strayBlankLines(blank: String) async throws {
        #expect(try await decodeAllWays(blank).isEmpty)
        let frames = try await decodeAllWays(blank + "data: a\n\n" + blank + blank + "data: b\n\n" + blank)
        #expect(frames.map(\.data) == ["a", "b"])
        #expect(frames.map(\.raw) == ["data: a\n\n", "data: b\n\n"])
    }

    @Test("A block of only unknown fields produces nothing")
    func blockWithoutKnownFields() async throws {
        #expect(try await decodeAllWays("bogus: 1\n\n").isEmpty)
    }

    @Test("A UTF-8 byte order mark at the start is dropped, even split over reads")
    func byteOrderMark() async throws {
        let frames = try await decodeAllWays("\u{FEFF}data: a\n\n")
        #expect(frames == [FrameSnapshot(raw: "data: a\n\n", data: "a")])
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        let reads = [ByteBuffer(bytes: bom[0..<1]), ByteBuffer(bytes: bom[1..<3] + Array("data: a\n\n".utf8))]
        #expect(try SSEFeed.frames(reads).snapshots == frames)
    }

    @Test("A byte order mark later in the stream is not dropped")
    func byteOrderMarkOnlyAtStart() async throws {
        // "\u{FEFF}data" is then an unknown field name, so the block carries nothing.
        let frames = try await decodeAllWays("data: a\n\n\u{FEFF}data: b\n\n")
        #expect(frames.map(\.data) == ["a"])
    }

    @Test("At the end of input an unfinished event is still delivered", arguments: [
        ("data: a\n", "data: a\n\n"),
        ("data: a", "data: a\n\n"),
        ("data: a\r", "data: a\r\n\n"),
        ("data: a\r\n", "data: a\r\n\n"),
    ])
    func unfinishedEventAtEnd(text: String, raw: String) async throws {
        let frames = try await decodeAllWays(text)
        #expect(frames == [FrameSnapshot(raw: raw, data: "a")])
    }

    @Test("data: [DONE] without a trailing newline at end of input")
    func doneWithoutNewline() async throws {
        let frames = try await decodeAllWays("data: {\"x\":1}\n\ndata: [DONE]")
        #expect(frames.map(\.data) == ["{\"x\":1}", "[DONE]"])
        #expect(frames.last?.raw == "data: [DONE]\n\n")
    }

    @Test("Empty input gives no frames")
    func emptyInput() async throws {
        #expect(try await decodeAllWays("").isEmpty)
        var decoder = SSEDecoder()
        var empty = ByteBuffer()
        #expect(try decoder.decodeLast(buffer: &empty, seenEOF: true) == nil)
    }

    // MARK: Size limit

    @Test("An event larger than the limit throws eventTooLarge after the events before it")
    func oversizedEvent() throws {
        let big = "data: " + String(repeating: "x", count: 100) + "\n\n"
        for reads in [SSEFeed.whole("data: a\n\n" + big), SSEFeed.bytewise("data: a\n\n" + big)] {
            let outcome = SSEFeed.run(reads, maximumEventSize: 64)
            #expect(outcome.frames.snapshots == [FrameSnapshot(raw: "data: a\n\n", data: "a")])
            #expect(outcome.error as? SSEDecoderError == .eventTooLarge(limit: 64))
        }
    }

    @Test("Many short lines in one event count together against the limit")
    func oversizedEventOfShortLines() {
        let block = String(repeating: "data: 0123456789\n", count: 10) + "\n"
        let outcome = SSEFeed.run(SSEFeed.whole(block), maximumEventSize: 64)
        #expect(outcome.frames.isEmpty)
        #expect(outcome.error as? SSEDecoderError == .eventTooLarge(limit: 64))
    }

    @Test("An event of exactly the limit is accepted")
    func eventAtTheLimit() throws {
        let block = "data: " + String(repeating: "x", count: 56) + "\n\n"
        #expect(block.utf8.count == 64)
        for reads in [SSEFeed.whole(block), SSEFeed.bytewise(block)] {
            #expect(try SSEFeed.frames(reads, maximumEventSize: 64).count == 1)
        }
    }

    @Test("One huge line with no newline, fed in many reads, fails before memory passes the limit")
    func hugeLineInManyReads() async throws {
        let limit = 4096
        let readSize = 512
        let reads = [ByteBuffer(string: "data: ")] + Array(repeating: ByteBuffer(repeating: UInt8(ascii: "x"), count: readSize), count: 200)
        let outcome = SSEFeed.run(reads, maximumEventSize: limit)
        #expect(outcome.error as? SSEDecoderError == .eventTooLarge(limit: limit))
        #expect(outcome.frames.isEmpty)
        #expect(outcome.peakBuffered <= limit + readSize, "buffered \(outcome.peakBuffered) bytes with a limit of \(limit)")
        #expect(outcome.bytesFed <= limit + readSize, "read \(outcome.bytesFed) bytes before failing")

        // The same through NIO's async decoding, which the gateway uses.
        await #expect(throws: SSEDecoderError.eventTooLarge(limit: limit)) {
            _ = try await SSEFeed.framesAsync(reads, maximumEventSize: limit)
        }
    }

    @Test("Whether an event is too large does not depend on how the input is split")
    func sizeLimitDoesNotDependOnSplit() {
        // The first line ends with CR LF exactly at the limit: whole, the LF is skipped without a
        // size check; one byte at a time, the read that ends on the LF is checked.
        let text = "data: ab\r\n\r\n"
        let whole = SSEFeed.run(SSEFeed.whole(text), maximumEventSize: 9)
        let bytewise = SSEFeed.run(SSEFeed.bytewise(text), maximumEventSize: 9)
        #expect(whole.frames.snapshots == bytewise.frames.snapshots)
        #expect((whole.error as? SSEDecoderError) == (bytewise.error as? SSEDecoderError))
    }

    // MARK: Raw bytes

    @Test("For LF input, the frames' raw bytes put together are the input")
    func rawReproducesLFInput() throws {
        let text = [
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            ": OPENROUTER PROCESSING\n\n",
            "event: note\nid: 3\nx-unknown: kept\ndata: line one\n: aside\ndata: line two\n\n",
            "data:{}\n\n",
            "data: [DONE]\n\n",
        ].joined()
        for reads in [SSEFeed.whole(text), SSEFeed.bytewise(text)] {
            let frames = try SSEFeed.frames(reads)
            #expect(frames.count == 6)
            #expect(String(decoding: frames.concatenatedRaw, as: UTF8.self) == text)
        }
    }

    @Test("An event's data is a view of its raw bytes")
    func dataLiesInsideRaw() throws {
        let frames = try SSEFeed.frames(SSEFeed.whole("id: 1\ndata: hello\n\n"))
        let frame = try #require(frames.first)
        let raw = String(decoding: frame.raw.readableBytesView, as: UTF8.self)
        let data = try #require(frame.data)
        #expect(raw.contains(String(decoding: data.readableBytesView, as: UTF8.self)))
    }
}

@Suite("SSEDecoder over random streams")
struct SSEDecoderPropertyTests {
    /// Seeds of the random streams; a failure names its seed, and `SplitMix64(seed:)` replays it.
    static let seeds: ClosedRange<UInt64> = 1...400

    /// Collects failures so that one broken rule reports a few examples, not hundreds.
    private struct Failures {
        private(set) var count = 0
        private(set) var examples: [String] = []
        mutating func check(_ condition: Bool, _ message: @autoclosure () -> String) {
            guard !condition else { return }
            self.count += 1
            if self.examples.count < 3 { self.examples.append(message()) }
        }
        var summary: String { "\(self.count) failing case(s); first ones:\n" + self.examples.joined(separator: "\n") }
    }

    private static func show(_ input: [UInt8]) -> String { String(decoding: input, as: UTF8.self).debugDescription }

    @Test("Whole, random splits and one byte at a time give identical frames")
    func splitsAgree() async throws {
        var failures = Failures()
        for seed in Self.seeds {
            var rng = SplitMix64(seed: seed)
            let input = EventStreamGrammar.randomStream(using: &rng)
            let whole = try SSEFeed.frames(SSEFeed.whole(input)).snapshots
            let bytewise = try SSEFeed.frames(SSEFeed.bytewise(input)).snapshots
            failures.check(bytewise == whole, "seed \(seed): one byte at a time \(bytewise) != whole \(whole)")
            for maximumRead in [2, 3, 7, 64] {
                let split = try SSEFeed.frames(SSEFeed.randomReads(input, maximumRead: maximumRead, using: &rng)).snapshots
                failures.check(split == whole, "seed \(seed): reads of up to \(maximumRead) bytes \(split) != whole \(whole)")
            }
            if seed % 10 == 0 {
                let viaAsync = try await SSEFeed.framesAsync(SSEFeed.randomReads(input, maximumRead: 5, using: &rng)).snapshots
                failures.check(viaAsync == whole, "seed \(seed): SSEFrameSequence \(viaAsync) != whole \(whole)")
            }
        }
        #expect(failures.count == 0, "\(failures.summary)")
    }

    @Test("Frames read as the event-stream rules say (an independent line-by-line reading)")
    func matchesReference() throws {
        var failures = Failures()
        for seed in Self.seeds {
            var rng = SplitMix64(seed: seed)
            let input = EventStreamGrammar.randomStream(using: &rng)
            let read = try SSEFeed.frames(SSEFeed.whole(input)).snapshots.map(EventStreamGrammar.Event.init)
            let reference = EventStreamGrammar.reference(input)
            failures.check(read == reference, "seed \(seed): decoded \(read) != reference \(reference) for \(Self.show(input))")
        }
        #expect(failures.count == 0, "\(failures.summary)")
    }

    @Test("An event's raw bytes decode again to the same event")
    func rawIsSelfContained() throws {
        var failures = Failures()
        for seed in Self.seeds {
            var rng = SplitMix64(seed: seed)
            let input = EventStreamGrammar.randomStream(using: &rng)
            for frame in try SSEFeed.frames(SSEFeed.whole(input)) {
                let again = try SSEFeed.frames([frame.raw]).snapshots
                failures.check(again == [FrameSnapshot(frame)], "seed \(seed): \(FrameSnapshot(frame)) decodes again as \(again)")
            }
        }
        #expect(failures.count == 0, "\(failures.summary)")
    }

    @Test("For LF-only streams, the raw bytes put together are the input, however it is split")
    func rawReproducesInput() throws {
        var failures = Failures()
        for seed in Self.seeds {
            var rng = SplitMix64(seed: seed)
            var text = ""
            for _ in 0..<Int.random(in: 1...12, using: &rng) {
                let value = EventStreamGrammar.values.randomElement(using: &rng)!
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: text += ": OPENROUTER PROCESSING\n\n"
                case 1: text += "data: \(value)\ndata:\(value)\n\n"
                case 2: text += "event: e\nid: \(seed)\nx-vendor: \(value)\ndata: \(value)\n\n"
                default: text += "data: \(value)\n\n"
                }
            }
            let input = Array(text.utf8)
            for reads in [SSEFeed.whole(input), SSEFeed.bytewise(input), SSEFeed.randomReads(input, maximumRead: 9, using: &rng)] {
                let raw = try SSEFeed.frames(reads).concatenatedRaw
                failures.check(raw == input, "seed \(seed): \(Self.show(raw)) != \(Self.show(input))")
            }
        }
        #expect(failures.count == 0, "\(failures.summary)")
    }

    @Test("With a small size limit, every split fails (or not) at the same event")
    func sizeLimitAgreesAcrossSplits() {
        var failures = Failures()
        for seed in Self.seeds {
            var rng = SplitMix64(seed: seed)
            let input = EventStreamGrammar.randomStream(using: &rng)
            let limit = Int.random(in: 8...48, using: &rng)
            let whole = SSEFeed.run(SSEFeed.whole(input), maximumEventSize: limit)
            for reads in [SSEFeed.bytewise(input), SSEFeed.randomReads(input, maximumRead: 6, using: &rng)] {
                let split = SSEFeed.run(reads, maximumEventSize: limit)
                let same = split.frames.snapshots == whole.frames.snapshots
                    && (split.error as? SSEDecoderError) == (whole.error as? SSEDecoderError)
                failures.check(
                    same,
                    "seed \(seed), limit \(limit): split gave \(split.frames.count) frame(s) and \(split.error.map { "\($0)" } ?? "no error"), "
                        + "whole gave \(whole.frames.count) and \(whole.error.map { "\($0)" } ?? "no error"), for \(Self.show(input))")
            }
        }
        #expect(failures.count == 0, "\(failures.summary)")
    }
}
