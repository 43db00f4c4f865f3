import Foundation
#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import RelayCore
import Synchronization

/// Answers the gateway's HTTP requests: the chat endpoint, the model list, the health check,
/// and OpenAI-shaped 404 and 405 for everything else.
struct HTTPRequestHandler: Sendable {
    let gateway: Gateway

    static let routes: [String: HTTPRequest.Method] = [
        "/v1/chat/completions": .post,
        "/v1/models": .get,
        "/healthz": .get,
        "/admin/reload": .post,
        "/metrics": .get,
    ]

    func respond(to request: Request, writer: consuming ResponseWriter, channel: any Channel) async throws {
        // Held in a slot: Hummingbird's writer is not Sendable, and its methods run on the
        // generic executor while ours run where their caller does; a writer taken out of the
        // slot belongs to no one else and may go there.
        let slot = ResponseWriterSlot(writer)
        // A stream holds this frame for as long as it lasts: the other routes, and what they
        // keep in their frames, are kept out of it.
        if request.method == .post, request.uri.path == "/v1/chat/completions" {
            try await ChatExchange(gateway: self.gateway, request: request, channel: channel).run(slot: slot)
        } else {
            try await self.respondOutsideChat(to: request, slot: slot, channel: channel)
        }
    }

    /// Every route and method but `POST /v1/chat/completions`.
    @inline(never)
    private func respondOutsideChat(to request: Request, slot: ResponseWriterSlot, channel: any Channel) async throws {
        guard let writer = slot.take() else { return }
        let path = request.uri.path
        guard let method = Self.routes[path] else {
            try await Self.write(error: .notFound("Unknown path \(Self.printable(path)). This gateway serves /v1/chat/completions, /v1/models and /healthz."), to: writer)
            return
        }
        guard request.method == method || (method == .get && request.method == .head) else {
            var error = RelayError.methodNotAllowed("\(request.method) is not allowed on \(path); use \(method).")
            error.headers[.allow] = method.rawValue
            try await Self.write(error: error, to: writer)
            return
        }
        switch path {
        case "/healthz":
            try await Self.write(json: self.health(), to: writer)
        case "/v1/models":
            try await Self.write(json: self.modelList(for: await PeerCredentials.read(from: channel)), to: writer)
        case "/metrics":
            let body = self.gateway.metrics.exposition(
                activeStreams: self.gateway.statistics.activeStreams.load(ordering: .relaxed),
                generation: self.gateway.statistics.generation.load(ordering: .relaxed)
            )
            var head = HTTPResponse(status: .ok)
            head.headerFields[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            head.headerFields[.contentLength] = String(body.count)
            try await writer.write(response: head, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        case "/admin/reload":
            try await self.reload(channel: channel, writer: writer)
        default:
            try await ChatExchange(gateway: self.gateway, request: request, channel: channel).run(slot: ResponseWriterSlot(writer))
        }
    }

    /// `chatrelayd reload` asks here; only root and the daemon's own user may.
    func reload(channel: any Channel, writer: consuming sending ResponseWriter) async throws {
        let caller = await PeerCredentials.read(from: channel)
        guard let caller, caller.uid == 0 || caller.uid == getuid() else {
            let error = RelayError(
                status: .forbidden,
                message: "Only root and the daemon's own user may reload it.",
                type: "permission_error",
                code: "permission_denied"
            )
            self.gateway.logger.warning("reload refused", metadata: ["caller_uid": "\(caller.map { "\($0.uid)" } ?? "unknown")"])
            try await Self.write(error: error, to: writer)
            return
        }
        switch self.gateway.reload() {
        case .success(let message):
            try await Self.write(json: ["status": "reloaded", "message": .string(message)], to: writer)
        case .failure(let error):
            try await Self.write(
                error: RelayError(status: .unprocessableContent, message: error.description, type: "invalid_request_error", code: "invalid_config"),
                to: writer
            )
        }
    }

    func health() -> JSONValue {
        let uptime = self.gateway.startedAt.duration(to: .now)
        return [
            "status": "ok",
            "version": .string(Gateway.version),
            "uptime_seconds": .number(Double(uptime.components.seconds)),
            "active_streams": .number(Double(self.gateway.statistics.activeStreams.load(ordering: .relaxed))),
            "requests_total": .number(Double(self.gateway.statistics.requestsTotal.load(ordering: .relaxed))),
        ]
    }

    func modelList() -> JSONValue {
        let runtime = self.gateway.currentRuntime
        let models = runtime.router.listedModels.map { model -> JSONValue in
            ["id": .string(model.id), "object": "model", "created": .number(Double(runtime.createdAt)), "owned_by": .string(model.upstream)]
        }
        return ["object": "list", "data": .array(models)]
    }

    static func write(json: JSONValue, status: HTTPResponse.Status = .ok, to writer: consuming sending ResponseWriter) async throws {
        let body = ByteBuffer(string: json.serialized())
        var head = HTTPResponse(status: status)
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        try await writer.write(response: head, body: ResponseBody(byteBuffer: body))
    }

    static func write(error: RelayError, to writer: consuming sending ResponseWriter) async throws {
        let body = error.jsonBody
        var head = HTTPResponse(status: error.status)
        head.headerFields = error.headers
        head.headerFields[.contentType] = "application/json"
        head.headerFields[.contentLength] = String(body.readableBytes)
        try await writer.write(response: head, body: ResponseBody(byteBuffer: body))
    }

    /// A client-supplied string made safe for a message: printable ASCII, bounded length.
    static func printable(_ text: String, limit: Int = 200) -> String {
        // Model names and finish reasons, several times per request, are already printable.
        if text.utf8.count <= limit, text.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return text }
        let cleaned = String(text.unicodeScalars.prefix(limit).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
        return text.unicodeScalars.count > limit ? cleaned + "…" : cleaned
    }
}
