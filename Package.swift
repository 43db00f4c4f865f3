// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // Release builds let RelayGateway specialise RelayCore's generics (the SSE decoder and
    // the event stream around the upstream's body ran unspecialised, looking up generic
    // metadata on every event): -5.7% instructions a stream, default pipeline; -9.5%
    // pass-through. For our modules only: the same flag for every package measured +2.3%
    // (Benchmarks/README.md, "What changed since: cross-module optimisation").
    .unsafeFlags(["-cross-module-optimization"], .when(configuration: .release)),
    // Release builds leave out the run-time exclusivity checks (a call into the runtime
    // for each access to a class's stored property, NIO's inlined ByteBuffer code among
    // them: six an event): -2.1% instructions a stream. Debug builds, which the tests run,
    // keep them, and trap on an overlapping access. (scripts/build release leaves them out
    // of the packages' modules too.)
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

/// The daemon's modules: an async function runs where its caller does (SE-0461, an
/// upcoming feature of Swift 6.2). Without it a call from one of ours to another hopped
/// executors, and each hop asks the runtime for the task's executor preference under a
/// lock: 73 task switches a request before, 59 with it. (The tests keep the old default:
/// with it, the expansions of Swift Testing's macros failed to build, Swift 6.3.1.)
let moduleSettings: [SwiftSetting] = swiftSettings + [
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

/// The daemon is linked by lld (the toolchain's own) with packed relative relocations
/// (`DT_RELR`, glibc 2.36+). A position-independent binary with the Swift runtime and
/// Foundation linked in carries 120,000 relative relocations: as `RELA` entries they are
/// 2.9 MB that the loader reads at every start, and gold cannot pack them. Idle RSS after
/// the first request, same objects: gold 34.2 MiB, lld 31.1–31.2, lld with RELR
/// 28.0–28.3 (Benchmarks/README.md, "What changed since: the binary's pages").
let daemonLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(platforms: [.linux])),
]

let package = Package(
    name: "chatrelayd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chatrelayd", targets: ["chatrelayd"]),
        // For the fuzz targets in Fuzz/, a package of their own.
        .library(name: "RelayCore", targets: ["RelayCore"]),
        .library(name: "RelayGateway", targets: ["RelayGateway"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // libsystemd's C API (sd-daemon, sd-journal), found through pkg-config.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // The Swift face of libsystemd: notify, watchdog, socket activation, journald logging.
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: moduleSettings
        ),
        // No sockets here: the SSE codec, the chat model, the stage contract and pipeline.
        .target(
            name: "RelayCore",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: moduleSettings
        ),
        // The server on the Unix socket, routes, upstream clients, configuration.
        .target(
            name: "RelayGateway",
            dependencies: [
                "RelayCore",
                "Systemd",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: moduleSettings
        ),
        // The executable: argument parsing and the service group, nothing else.
        .executableTarget(
            name: "chatrelayd",
            dependencies: [
                "RelayGateway",
                "Systemd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: moduleSettings,
            linkerSettings: daemonLinkerSettings
        ),
        // Test helper only: runs Systemd code in a process of its own (socket activation, journald).
        .executableTarget(
            name: "systemd-probe",
            dependencies: [
                "Systemd",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: moduleSettings
        ),
        // Measurement only: the CPU cost of reading one streamed event (see its header).
        .executableTarget(
            name: "relay-microbench",
            dependencies: [
                "RelayCore",
                "RelayGateway",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: moduleSettings
        ),
        .testTarget(
            name: "RelayCoreTests",
            dependencies: ["RelayCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SystemdTests",
            dependencies: [
                "Systemd",
                "systemd-probe",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RelayGatewayTests",
            dependencies: [
                "RelayGateway",
                "chatrelayd",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
