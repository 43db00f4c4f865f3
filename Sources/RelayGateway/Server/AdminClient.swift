import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RelayCore

/// Talks to a running daemon over its socket, for `chatrelayd reload`.
public enum AdminClient {
    /// POSTs to `path` on the daemon at `socket`; returns the status and the answer's message.
    public static func post(path: String, socket: String, timeout: Duration = .seconds(60)) async throws -> (status: Int, message: String) {
        let encoded = socket.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? socket
        var request = HTTPClientRequest(url: "http+unix://\(encoded)\(path)")
        request.method = .POST
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
        do {
            let response = try await client.execute(request, timeout: .seconds(timeout.components.seconds))
            let body = try await response.body.collect(upTo: 1 << 20)
            try await client.shutdown()
            let json = try? JSONValue(parsing: body.readableBytesView)
            let message = json?["message"]?.stringValue ?? json?["error"]?["message"]?.stringValue ?? String(buffer: body)
            return (Int(response.status.code), message)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
