// swift-tools-version:6.1
import PackageDescription

// The benchmark tools live in a package of their own so that the daemon's build never
// compiles them, and so that they depend on nothing but SwiftNIO.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "chatrelayd-benchmarks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bench-upstream", targets: ["BenchUpstream"]),
        .executable(name: "bench-load", targets: ["BenchLoad"]),
        .executable(name: "bench-soak", targets: ["BenchSoak"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
    ],
    targets: [
        // What the tools share: the option parser, the descriptor limit, the SSE line scanner.
        .target(
            name: "BenchSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // A loopback OpenAI-compatible upstream that streams scripted chunks.
        .executableTarget(
            name: "BenchUpstream",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The load generator: N concurrent streams over a Unix socket or TCP, timed per event.
        .executableTarget(
            name: "BenchLoad",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The soak: a long mix of streams, completions, errors and hang-ups through the relay,
        // watching its memory, descriptors and usage ledger.
        .executableTarget(
            name: "BenchSoak",
            dependencies: [
                "BenchSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
