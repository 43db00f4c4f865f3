import ArgumentParser
import Foundation
import Logging
import RelayCore
import RelayGateway
import ServiceLifecycle
import UnixSignals
import Systemd

/// `chatrelayd`: a local gateway for LLM chat streams on a Unix socket.
@main
struct ChatRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chatrelayd",
        abstract: "A local gateway for OpenAI-compatible chat completion streams, on a Unix socket.",
        version: Gateway.version,
        subcommands: [Serve.self, CheckConfig.self],
        defaultSubcommand: Serve.self
    )
}

/// `chatrelayd serve`: runs the daemon until SIGTERM or SIGINT.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway (the default command).",
        discussion: "Without --config it serves the built-in default: the project's recorded streams on "
            + "$XDG_RUNTIME_DIR/chatrelayd/gateway.sock (or ./run/gateway.sock), no API key needed."
    )

    @Option(name: .long, help: "The configuration file (YAML).")
    var config: String?

    func run() async throws {
        LoggingSystem.bootstrap { label in SystemdLogging.makeHandler(label: label) }
        let logger = Logger(label: "chatrelayd")
        let notifier = SystemdNotifier()
        let gateway: Gateway
        do {
            let settings = try self.config.map { try ConfigLoader.load(path: $0) } ?? ConfigLoader.builtInDefault()
            gateway = try Gateway(config: settings, logger: logger)
            logger.info("configuration loaded", metadata: ["config": .string(self.config ?? "built-in default")])
        } catch {
            logger.critical("cannot start: \(error)")
            _ = try? notifier.startupFailed(errno: EINVAL, status: "cannot start: \(error)")
            throw ExitCode(78)  // EX_CONFIG
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: gateway), .init(service: SystemdIntegration(gateway: gateway))],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        do {
            try await group.run()
        } catch {
            logger.critical("stopped on error: \(error)")
            _ = try? notifier.startupFailed(errno: EIO, status: "failed: \(error)")
            throw ExitCode(1)
        }
    }
}

/// `chatrelayd check-config PATH`: parses and validates a file, prints what it would run.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a configuration file and print what it would run."
    )

    @Argument(help: "The configuration file (YAML).")
    var path: String

    func run() async throws {
        LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
        do {
            let config = try ConfigLoader.load(path: self.path)
            let gateway = try Gateway(config: config, logger: Logger(label: "check-config"))
            await gateway.close()
            print("\(self.path): OK")
            print(gateway.currentRuntime.summary)
        } catch {
            FileHandle.standardError.write(Data("chatrelayd: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
