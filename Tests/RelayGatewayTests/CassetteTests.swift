import Foundation
import HTTPTypes
import Logging
import NIOCore
import RelayCore
import Testing

@testable import RelayGateway

@Suite("Cassettes and the cassette upstream")
struct CassetteTests {
    // MARK: Parsing

    @Test("Every shared corpus cassette parses",
        .enabled(if: CorpusPaths.corpusExists, CorpusPaths.skipComment),
        arguments: CorpusPaths.corpusCassettes)
    func corpusCassetteParses(name: String) throws {
        try Self.checkParses(CorpusPaths.corpusPath(name))
    }

    @Test("Every fixture cassette parses", arguments: CorpusPaths.fixtureCassettes)
    func fixtureCassetteParses(name: String) throws {
        try Self.checkParses(CorpusPaths.fixturePath(name))
    }

    static func checkParses(_ path: String) throws {
        let cassette = try Cassette(path: path)
        #expect(cassette.path == path)
        #expect(!cassette.interactions.isEmpty)
        for interaction in cassette.interactions {
            #expect(interaction.method == "POST")
            #expect(interaction.url.hasSuffix("/chat/completions"), "\(interaction.url)")
            #expect(interaction.requestJSON?["model"]?.stringValue != nil, "the request body is JSON with a model")
            #expect(interaction.contentType != nil)
            #expect(!interaction.responseBody.isEmpty)
            #expect(interaction.duration != nil, "duration parses")
            #expect([200, 429].contains(interaction.status), "status \(interaction.status)")
        }
    }

    @Test("Interaction fields come from the YAML")
    func interactionFields() throws {
        let yaml = """
            version: 2
            interactions:
            - request:
                body: '{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
                url: https://example.com/v1/chat/completions
                method: POST
              response:
                body: "data: [DONE]\\n\\n"
                headers:
                  content-type:
                  - text/event-stream; charset=utf-8
                status: 429 Too Many Requests
                duration: 1.5s
            """
        let cassette = try Cassette(yaml: yaml)
        let interaction = try #require(cassette.interactions.first)
        #expect(interaction.status == 429, "the status line is used when there is no code")
        #expect(interaction.contentType == "text/event-stream; charset=utf-8", "header names match in any case")
        #expect(interaction.responseBody == "data: [DONE]\n\n")
        #expect(interaction.requestJSON?["stream"] == true)
        #expect(interaction.duration == .milliseconds(1500))
    }

    @Test("A file that is not a version 2 cassette is rejected with its path", arguments: [
        "version: 1\ninteractions: []\n", "interactions: []\n", "- just\n- a list\n",
    ])
    func rejectsOtherFiles(yaml: String) {
        #expect {
            _ = try Cassette(yaml: yaml, path: "/x/bad.yaml")
        } throws: { error in
            (error as? ConfigError)?.description.hasPrefix("/x/bad.yaml") ?? false
        }
    }

    @Test("Cassette.files lists the YAML files of a folder in order, or the file itself")
    func files() throws {
        let listed = try Cassette.files(at: CorpusPaths.fixtureFolder)
        #expect(listed == listed.sorted())
        #expect(listed.contains(CorpusPaths.fixtureSeed))
        #expect(listed.allSatisfy { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") })
        #expect(try Cassette.files(at: CorpusPaths.fixtureSeed) == [CorpusPaths.fixtureSeed])
        #expect(throws: ConfigError.self) { _ = try Cassette.files(at: CorpusPaths.fixtureFolder + "/missing") }
    }

    // MARK: GoDuration

    @Test("Go durations parse", arguments: [
        ("189.396459ms", Duration.nanoseconds(189_396_459)),
        ("1.5s", .milliseconds(1500)),
        ("2m3.5s", .milliseconds(123_500)),
        ("1h", .seconds(3600)),
        ("1h2m3s", .seconds(3723)),
        ("0", .zero),
        ("0s", .zero),
        ("250us", .microseconds(250)),
        ("250µs", .microseconds(250)),
        ("42ns", .nanoseconds(42)),
    ])
    func goDuration(text: String, expected: Duration) throws {
        let parsed = try #require(GoDuration.parse(text))
        let difference = abs((parsed - expected) / .nanoseconds(1))
        #expect(difference <= 1, "\(text) parsed as \(parsed)")
    }

    @Test("Go durations parse to the exact nanosecond", arguments: [
        ("608.021ms", 608_021_000),  // Tests/Fixtures/cassettes/openai-gpt-4o-mini-simple.yaml
        ("1.068865292s", 1_068_865_292),  // a corpus duration
        ("859.5µs", 859_500),
        ("1m18.00699275s", 78_006_992_750),
    ] as [(String, Int64)])
    func goDurationExact(text: String, nanoseconds: Int64) throws {
        let parsed = try #require(GoDuration.parse(text))
        #expect(parsed == .nanoseconds(nanoseconds), "\(text) parsed as \(parsed.components)")
    }

    @Test("Garbage is not a Go duration", arguments: ["", "garbage", "1", "1.5", "ms", "1x", "-", "s1", "1s garbage", "1..2s"])
    func goDurationGarbage(text: String) {
        #expect(GoDuration.parse(text) == nil)
    }

    // MARK: CassetteUpstream

    static func context() -> StageContext {
        StageContext(
            requestID: "t", requestedModel: "grok-4-fast", upstreamName: "rec", logger: Logger(label: "test"),
            record: RequestRecord(UsageRecord(requestID: "t", requestedModel: "grok-4-fast", upstream: "rec", stream: true, caller: nil)))
    }

    static func seedUpstream() throws -> CassetteUpstream {
        try CassetteUpstream(settings: UpstreamSettings(name: "rec", kind: .cassette, cassettes: [CorpusPaths.fixtureSeed]), maximumEventSize: 1 << 20)
    }

    static func request(_ text: String) throws -> ChatRequest {
        try ChatRequest(body: ByteBuffer(string: text))
    }

    /// The seed's question in other words: other key order and whitespace, no max_tokens,
    /// other stream_options, an extra member.
    static let sameQuestion = """
        {
          "stream" : true,
          "stream_options" : { "include_usage" : false },
          "temperature" : 0.2,
          "messages" : [
            { "role" : "system", "content" : "You are a helpful assistant" },
            {"content":"Say hi in Portuguese",   "role":"user"}
          ],
          "model" : "grok-4-fast"
        }
        """

    @Test("A request with the same meaning gets the recorded stream, byte for byte")
    func matchesByMeaning() async throws {
        let upstream = try Self.seedUpstream()
        #expect(upstream.count == 1)
        let context = Self.context()
        let response = try await upstream.send(try Self.request(Self.sameQuestion), context: context)
        #expect(response.status == .ok)
        guard case .events(let stream) = response.body else {
            Issue.record("expected an event stream")
            return
        }
        var events: [StreamEvent] = []
        for try await event in stream { events.append(event) }
        #expect(events.count == 128)
        #expect(events.last?.kind == .done)

        let recorded = try #require(try Cassette(path: CorpusPaths.fixtureSeed).interactions.first)
        var replayed = ByteBuffer()
        for event in events { replayed.writeImmutableBuffer(event.bytes) }
        #expect(String(buffer: replayed) == recorded.responseBody)
        #expect(context.record.snapshot.attempts == 1)
    }

    @Test("A request that differs in meaning gets 404 cassette_not_found", arguments: [
        // other messages
        #"{"model":"grok-4-fast","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant"},{"role":"user","content":"Say hi in French"}]}"#,
        // one message fewer
        #"{"model":"grok-4-fast","stream":true,"messages":[{"role":"user","content":"Say hi in Portuguese"}]}"#,
        // another model
        #"{"model":"grok-3-mini","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant"},{"role":"user","content":"Say hi in Portuguese"}]}"#,
        // not streaming
        #"{"model":"grok-4-fast","messages":[{"role":"system","content":"You are a helpful assistant"},{"role":"user","content":"Say hi in Portuguese"}]}"#,
    ])
    func noMatch(body: String) async throws {
        let upstream = try Self.seedUpstream()
        let context = Self.context()
        await #expect {
            _ = try await upstream.send(try Self.request(body), context: context)
        } throws: { error in
            guard let error = error as? RelayError else { return false }
            return error.status == .notFound && error.code == "cassette_not_found" && error.message.contains("'rec'")
        }
        #expect(context.record.snapshot.attempts == 0)
    }

    @Test("A non-streaming recording is replayed whole with its content type")
    func wholeResponse() async throws {
        let path = CorpusPaths.fixturePath("openai-gpt-4o-mini-simple.yaml")
        try #require(FileManager.default.fileExists(atPath: path))
        let upstream = try CassetteUpstream(settings: UpstreamSettings(name: "rec", kind: .cassette, cassettes: [path]), maximumEventSize: 1 << 20)
        let recorded = try #require(try Cassette(path: path).interactions.first)
        let question = try #require(recorded.requestJSON?["messages"]).serialized()
        let response = try await upstream.send(try Self.request(#"{"model":"gpt-4o-mini","messages":\#(question)}"#), context: Self.context())
        #expect(response.status == .ok)
        #expect(response.headerFields[.contentType] == "application/json")
        guard case .whole(let body) = response.body else {
            Issue.record("expected a whole body")
            return
        }
        #expect(String(buffer: body) == recorded.responseBody)
    }

    @Test("A folder of cassettes loads every recording in it")
    func folder() throws {
        let upstream = try CassetteUpstream(
            settings: UpstreamSettings(name: "rec", kind: .cassette, cassettes: [CorpusPaths.fixtureFolder]), maximumEventSize: 1 << 20)
        #expect(upstream.count >= CorpusPaths.fixtureCassettes.count)
    }

    @Test("Pacing is none, recorded or a duration", arguments: [
        ("none", CassettePacing.none), ("recorded", .recorded), ("2s", .over(.seconds(2))), ("500ms", .over(.milliseconds(500))),
    ])
    func pacing(text: String, expected: CassettePacing) throws {
        #expect(try CassettePacing(text) == expected)
    }

    @Test("A pace that is none of those is rejected")
    func badPacing() {
        #expect(throws: ConfigError.self) { _ = try CassettePacing("fast") }
    }

    // MARK: eventPieces

    @Test("eventPieces splits after each blank line and keeps every byte")
    func eventPieces() {
        let body = ByteBuffer(string: ": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\ndata: b\ndata: c\n\ndata: [DONE]")
        let pieces = CassetteUpstream.eventPieces(of: body).map { String(buffer: $0) }
        #expect(pieces == [": OPENROUTER PROCESSING\n\n", "data: {\"a\":1}\n\n", "data: b\ndata: c\n\n", "data: [DONE]"])
        #expect(pieces.joined() == String(buffer: body))
    }

    @Test("eventPieces of the seed gives one piece per event")
    func eventPiecesOfSeed() throws {
        let recorded = try #require(try Cassette(path: CorpusPaths.fixtureSeed).interactions.first)
        let pieces = CassetteUpstream.eventPieces(of: ByteBuffer(string: recorded.responseBody))
        #expect(pieces.count == 128)
        #expect(pieces.allSatisfy { String(buffer: $0).hasSuffix("\n\n") && String(buffer: $0).hasPrefix("data: ") })
        #expect(pieces.map { String(buffer: $0) }.joined() == recorded.responseBody)
    }

    @Test("eventPieces of nothing is nothing; a body without a blank line is one piece")
    func eventPiecesEdges() {
        #expect(CassetteUpstream.eventPieces(of: ByteBuffer()).isEmpty)
        #expect(CassetteUpstream.eventPieces(of: ByteBuffer(string: "{\"a\":1}")).map { String(buffer: $0) } == ["{\"a\":1}"])
        #expect(CassetteUpstream.eventPieces(of: ByteBuffer(string: "\n\n\n\n")).map { String(buffer: $0) } == ["\n\n", "\n\n"])
    }
}
