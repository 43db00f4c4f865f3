import Foundation
public import RelayCore
import Yams

/// A go-vcr (format `version: 2`) recording of HTTP interactions, as the corpus holds them.
public struct Cassette: Sendable {
    /// One recorded request and its response.
    public struct Interaction: Sendable {
        public var method: String
        public var url: String
        /// The request body as JSON, when it was JSON.
        public var requestJSON: JSONValue?
        public var status: Int
        public var contentType: String?
        public var responseBody: String
        /// How long the whole response took when it was recorded.
        public var duration: Duration?
    }

    public var path: String
    public var interactions: [Interaction]

    /// Reads one cassette file.
    public init(path: String) throws(ConfigError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError("\(path): cannot read the cassette (\(error.localizedDescription))")
        }
        try self.init(yaml: text, path: path)
    }

    /// Parses cassette text.
    public init(yaml: String, path: String = "<memory>") throws(ConfigError) {
        let file: CassetteFile
        do {
            file = try YAMLDecoder().decode(CassetteFile.self, from: yaml)
        } catch {
            throw ConfigError("\(path): not a go-vcr cassette (\(error))")
        }
        guard file.version == 2 else { throw ConfigError("\(path): cassette version \(file.version ?? 0) is not 2") }
        self.path = path
        self.interactions = (file.interactions ?? []).map { recorded in
            let contentType = recorded.response.headers?.first { $0.key.lowercased() == "content-type" }?.value.first
            return Interaction(
                method: recorded.request.method ?? "POST",
                url: recorded.request.url ?? "",
                requestJSON: recorded.request.body.flatMap { try? JSONValue(parsing: Array($0.utf8)) },
                status: recorded.response.code ?? Int(recorded.response.status?.prefix(3) ?? "") ?? 200,
                contentType: contentType,
                responseBody: recorded.response.body ?? "",
                duration: recorded.response.duration.flatMap(GoDuration.parse)
            )
        }
    }

    /// Every `*.yaml` / `*.yml` file at `path`, or the file itself.
    public static func files(at path: String) throws(ConfigError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ConfigError("cassette path \(path) does not exist")
        }
        guard isDirectory.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { path + "/" + $0 }
    }
}

private struct CassetteFile: Decodable {
    var version: Int?
    var interactions: [RecordedInteraction]?

    struct RecordedInteraction: Decodable {
        var request: RecordedRequest
        var response: RecordedResponse
    }

    struct RecordedRequest: Decodable {
        var body: String?
        var url: String?
        var method: String?
    }

    struct RecordedResponse: Decodable {
        var body: String?
        var headers: [String: [String]]?
        var status: String?
        var code: Int?
        var duration: String?
    }
}
