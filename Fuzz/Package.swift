// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for the daemon's parsers, in a package of their own so that the
// daemon's build never compiles them. Build and run them with scripts/fuzz, which adds
// -sanitize=fuzzer,address; see README.md here.
//
// Each target's one file defines LLVMFuzzerTestOneInput and nothing else of substance:
// it hands the input to the real parser and traps when an invariant breaks. The targets
// use `@testable import` to reach internal parsers (SwiftPM debug builds allow it), and
// `-parse-as-library` because they have no `main` of their own.
let fuzzSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .unsafeFlags(["-parse-as-library"]),
]

let package = Package(
    name: "chatrelayd-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "chatrelayd", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // Each target's entry point, handing over to libFuzzer (see FuzzEntry.c for why).
        .target(name: "FuzzEntry"),
        // The SSE decoder, fed the input in reads split where the input's first bytes say.
        .executableTarget(
            name: "FuzzSSE",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayCore", package: "chatrelayd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzSettings
        ),
        // The JSON parser and the chunk scanner, held to the tree-based reference.
        .executableTarget(
            name: "FuzzJSON",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayCore", package: "chatrelayd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzSettings
        ),
        // A client's chat request body.
        .executableTarget(
            name: "FuzzChatRequest",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayCore", package: "chatrelayd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzSettings
        ),
        // The YAML configuration file.
        .executableTarget(
            name: "FuzzConfig",
            dependencies: ["FuzzEntry", .product(name: "RelayGateway", package: "chatrelayd")],
            swiftSettings: fuzzSettings
        ),
        // A go-vcr cassette, and the replay of its recorded streams through the decoder.
        .executableTarget(
            name: "FuzzCassette",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayGateway", package: "chatrelayd"),
                .product(name: "RelayCore", package: "chatrelayd"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: fuzzSettings
        ),
        // Bytes from a client on a connection to the real gateway (HummingbirdCore's
        // HTTP1Channel, our handlers), on a Unix socket in the fuzz process itself.
        .executableTarget(
            name: "FuzzHTTP",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayGateway", package: "chatrelayd"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: fuzzSettings
        ),
        // An upstream's HTTP/1.1 responses: HTTP1ResponseParser, fed in reads split where
        // the input's first byte says.
        .executableTarget(
            name: "FuzzUpstreamHTTP",
            dependencies: [
                "FuzzEntry",
                .product(name: "RelayGateway", package: "chatrelayd"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: fuzzSettings
        ),
    ]
)
