import Foundation
import Testing

/// Where the recorded streams are: the shared corpus beside the repository
/// (`<root>/../shared/corpus`; in CI the clone has `shared/` next to it) and the project's
/// own fixtures in `Tests/Fixtures/cassettes`.
///
/// Tests over the shared corpus are marked `.enabled(if: CorpusPaths.corpusExists, ...)`, so
/// that a checkout without it shows them as skipped with ``skipComment``; the always-running
/// `CorpusDecoderTests.corpusPresent` test records a warning saying so, and fails instead when
/// `CHATRELAYD_REQUIRE_CORPUS=1` (set it in CI, where a missing corpus is a broken setup).
/// `CHATRELAYD_CORPUS=PATH` points the tests at a corpus somewhere else.
enum CorpusPaths {
    /// The repository root: this file is `<root>/Tests/RelayGatewayTests/CorpusPaths.swift`.
    static let repositoryRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // RelayGatewayTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // root
        .standardizedFileURL.path

    /// `<root>/../shared/corpus`, or `$CHATRELAYD_CORPUS` when that is set.
    static let corpus: String = {
        if let override = ProcessInfo.processInfo.environment["CHATRELAYD_CORPUS"], !override.isEmpty {
            return URL(fileURLWithPath: override).standardizedFileURL.path
        }
        return URL(fileURLWithPath: repositoryRoot).deletingLastPathComponent()
            .appendingPathComponent("shared/corpus").standardizedFileURL.path
    }()

    /// `<corpus>/chat`: the recorded `/chat/completions` traffic.
    static var chatFolder: String { self.corpus + "/chat" }

    /// The project's own cassettes.
    static var fixtureFolder: String { self.repositoryRoot + "/Tests/Fixtures/cassettes" }

    /// The founding recording in the project's fixtures (always there).
    static var fixtureSeed: String { self.fixtureFolder + "/seed-xai-grok-4-fast-keepalive.yaml" }

    /// Whether the shared corpus is there to test against.
    static var corpusExists: Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: self.chatFolder, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The comment disabled corpus tests show.
    static var skipComment: Comment { "skipped: corpus not found at \(Self.corpus)" }

    /// Whether a missing corpus is a failure rather than a skip.
    static var corpusRequired: Bool { ProcessInfo.processInfo.environment["CHATRELAYD_REQUIRE_CORPUS"] == "1" }

    /// The `*.yaml` files in `folder` whose names pass `include`, by name; empty when the folder is missing.
    static func yamlFiles(in folder: String, where include: (String) -> Bool = { _ in true }) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { $0.hasSuffix(".yaml") && include($0) }.sorted()
    }

    /// `chat/NAME.yaml` for every cassette in the corpus's chat folder.
    static var chatCassettes: [String] { self.yamlFiles(in: self.chatFolder).map { "chat/" + $0 } }

    /// `seed-*.yaml` at the top of the corpus.
    static var seedCassettes: [String] { self.yamlFiles(in: self.corpus) { $0.hasPrefix("seed-") } }

    /// Every cassette of the shared corpus, relative to ``corpus``: what tests are parameterized by.
    static var corpusCassettes: [String] { self.seedCassettes + self.chatCassettes }

    /// Every cassette among the project's fixtures, by file name.
    static var fixtureCassettes: [String] { self.yamlFiles(in: self.fixtureFolder) }

    /// The full path of a corpus cassette named as in ``corpusCassettes``.
    static func corpusPath(_ name: String) -> String { self.corpus + "/" + name }

    /// The full path of a fixture cassette named as in ``fixtureCassettes``.
    static func fixturePath(_ name: String) -> String { self.fixtureFolder + "/" + name }
}
