import Foundation

/// A response as curl saw it over the Unix socket.
struct CurlResponse {
    var status: Int
    var headers: [String: String]
    var body: String

    /// The `data:` payloads of an event stream, in order.
    var dataEvents: [String] {
        self.body.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }
}

/// Calls the gateway with the real curl, as a user would.
func curl(_ socket: String, _ method: String = "GET", _ path: String, body: String? = nil, extra: [String] = []) async throws -> CurlResponse {
    let directory = try TestPaths.temporaryDirectory("curl")
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var arguments = ["-sS", "-N", "--unix-socket", socket, "-X", method, "-D", directory + "/headers", "-o", directory + "/body"]
    if let body {
        try body.write(toFile: directory + "/request", atomically: true, encoding: .utf8)
        arguments += ["-H", "Content-Type: application/json", "--data-binary", "@" + directory + "/request"]
    }
    // A daemon that stops answering fails the test instead of hanging the suite.
    arguments += ["--max-time", "120"] + extra
    arguments.append("http://localhost" + path)
    let result = try await runProcess(TestPaths.curl, arguments)
    let headerText = (try? String(contentsOfFile: directory + "/headers", encoding: .utf8)) ?? ""
    // Decoded leniently: a relayed upstream event may hold bytes that are not UTF-8 (they
    // show as U+FFFD), and the rest of the body must still be readable.
    let bodyText = FileManager.default.contents(atPath: directory + "/body").map { String(decoding: $0, as: UTF8.self) } ?? ""
    var status = 0
    var headers: [String: String] = [:]
    for line in headerText.components(separatedBy: "\r\n") {
        if line.hasPrefix("HTTP/") {
            status = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        } else if let colon = line.firstIndex(of: ":") {
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    if status == 0 { throw GatewayProcessError("curl failed (\(result.status)): \(result.standardError)") }
    return CurlResponse(status: status, headers: headers, body: bodyText)
}
