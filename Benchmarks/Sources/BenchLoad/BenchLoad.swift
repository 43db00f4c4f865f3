import BenchSupport
import Foundation

/// `bench-load`: N concurrent chat streams against a relay or an upstream, timed per event,
/// with the relay's CPU and memory read from /proc around the run.
@main
enum BenchLoad {
    static func main() async {
        do {
            let configuration = try LoadConfiguration(arguments: Array(CommandLine.arguments.dropFirst()))
            let descriptors = FileDescriptorLimit.raiseToHardLimit()
            if descriptors < UInt64(configuration.concurrency) + 64 {
                printToStandardError("bench-load: warning: \(descriptors) descriptors for \(configuration.concurrency) connections")
            }
            let report = try await LoadRun(configuration: configuration).execute()
            print(report.summary)
            if let path = configuration.jsonPath {
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try encoder.encode(report).write(to: URL(fileURLWithPath: path), options: .atomic)
            }
        } catch {
            printToStandardError("bench-load: \(error)")
            exit(2)
        }
    }
}
