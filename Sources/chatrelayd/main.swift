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
        subcommands: [Serve.self, CheckConfig.self, Reload.self, UsageCommand.self],
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
        // CHATRELAYD_LOG_TARGET=journal|stderr overrides the choice systemd's JOURNAL_STREAM makes.
        switch ProcessInfo.processInfo.environment["CHATRELAYD_LOG_TARGET"] {
        case "journal": LoggingSystem.bootstrap { JournaldLogHandler(label: $0) }
        case "stderr": LoggingSystem.bootstrap { StandardErrorLogHandler(label: $0) }
        default: LoggingSystem.bootstrap { SystemdLogging.makeHandler(label: $0) }
        }
        let logger = Logger(label: "chatrelayd")
        let notifier = SystemdNotifier()
        let gateway: Gateway
        do {
            let settings = try self.config.map { try ConfigLoader.load(path: $0) } ?? ConfigLoader.builtInDefault()
            gateway = try Gateway(config: settings, configPath: self.config, logger: logger)
            logger.info("configuration loaded", metadata: ["config": .string(self.config ?? "built-in default")])
        } catch {
            logger.critical("cannot start: \(error)")
            _ = try? notifier.startupFailed(errno: EINVAL, status: "cannot start: \(error)")
            throw ExitCode(78)  // EX_CONFIG
        }
        let group = ServiceGroup(
            configuration: .init(
                // Stopped in reverse order: the gateway drains while systemd still gets its pings.
                services: [.init(service: SystemdIntegration(gateway: gateway)), .init(service: gateway)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [.sigquit],
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
        LoggingSystem.bootstrap { label in StandardErrorLogHandler(label: label) }
        do {
            let config = try ConfigLoader.load(path: self.path)
            let gateway = try Gateway(config: config, logger: Logger(label: "check-config"), checkOnly: true)
            await gateway.close()
            print("\(self.path): OK")
            print(gateway.currentRuntime.summary)
        } catch {
            FileHandle.standardError.write(Data("chatrelayd: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// `chatrelayd reload`: asks the running daemon to load its configuration again and waits
/// for the answer (for `ExecReload=`). The daemon accepts this only from root or its own user.
struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the running gateway to reload its configuration, and wait for the result."
    )

    @Option(name: .long, help: "The configuration file of the running daemon (to find its socket).")
    var config: String?

    @Option(name: .long, help: "The daemon's socket (default: the one the configuration names).")
    var socket: String?

    func run() async throws {
        let path: String
        if let socket = self.socket {
            path = socket
        } else {
            do {
                path = try self.config.map { try ConfigLoader.load(path: $0).server.socket } ?? ConfigLoader.builtInDefault().server.socket
            } catch {
                FileHandle.standardError.write(Data("chatrelayd reload: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        do {
            let answer = try await AdminClient.post(path: "/admin/reload", socket: path)
            if answer.status == 200 {
                print("chatrelayd: \(answer.message)")
            } else {
                FileHandle.standardError.write(Data("chatrelayd reload failed: \(answer.message)\n".utf8))
                throw ExitCode(1)
            }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            FileHandle.standardError.write(Data("chatrelayd reload: cannot reach the daemon on \(path): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// `chatrelayd usage`: requests and tokens per caller or model over a period, from the usage ledger.
struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "Print requests and tokens per caller (user or unit) or per model, from the usage ledger.",
        discussion: "Reads the ledger the configuration names (server.usage_ledger). The period is today (UTC, "
            + "the day token budgets count) unless --day or --since says otherwise."
    )

    @Option(name: .long, help: "The daemon's configuration file (default: \(UsageReport.systemConfig)).")
    var config: String?

    @Option(name: .long, help: "The ledger to read, instead of the one the configuration names.")
    var ledger: String?

    @Option(name: .long, help: "The last DURATION (90m, 24h, 7d).")
    var since: String?

    @Option(name: .long, help: "One day, YYYY-MM-DD (UTC).")
    var day: String?

    @Option(name: .long, help: "Rows per caller, model, or caller,model.")
    var by: String = "caller"

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() async throws {
        do {
            print(try UsageReport.commandOutput(config: self.config, ledger: self.ledger, since: self.since, day: self.day, by: self.by, json: self.json))
        } catch {
            FileHandle.standardError.write(Data("chatrelayd usage: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
