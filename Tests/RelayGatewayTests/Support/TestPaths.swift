import Foundation

/// Where the repository, the built products and the shared corpus are.
enum TestPaths {
    /// The repository root (three levels above this file).
    static let repositoryRoot: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// The folder SwiftPM built the test bundle and the executables into.
    static let productsDirectory: String = {
        let bundle = Bundle.main.bundleURL
        for candidate in [bundle, bundle.deletingLastPathComponent(), bundle.deletingLastPathComponent().deletingLastPathComponent()] {
            if FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent("chatrelayd").path) {
                return candidate.path
            }
        }
        return repositoryRoot + "/.build/debug"
    }()

    /// The chatrelayd executable under test.
    static var chatrelayd: String { productsDirectory + "/chatrelayd" }

    /// The project's own cassettes.
    static var fixtureCassettes: String { repositoryRoot + "/Tests/Fixtures/cassettes" }

    /// The Python interpreter of the test venv that has the `openai` package, when set up.
    static var venvPython: String? {
        let path = repositoryRoot + "/.venv/bin/python3"
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// Whether the suite must fail rather than skip when a client is missing (set by scripts/test).
    static var clientsRequired: Bool { ProcessInfo.processInfo.environment["CHATRELAYD_REQUIRE_CLIENTS"] == "1" }

    static let curl = "/usr/bin/curl"

    /// A fresh private folder for one test.
    static func temporaryDirectory(_ tag: String) throws -> String {
        let path = NSTemporaryDirectory() + "chatrelayd-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
