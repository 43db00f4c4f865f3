public import HTTPTypes
public import NIOCore

/// An error the relay reports to a client, in the OpenAI shape
/// `{"error":{"message","type","code"}}` and with the HTTP status that goes with it.
///
/// Before the commit point it becomes the HTTP response; after it, one SSE error event.
public struct RelayError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var code: String?
    /// Extra response headers, such as `Retry-After`.
    public var headers: HTTPFields

    public init(
        status: HTTPResponse.Status,
        message: String,
        type: String,
        code: String? = nil,
        headers: HTTPFields = [:]
    ) {
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers
    }

    public var description: String { "\(self.status.code) \(self.type)/\(self.code ?? "-"): \(self.message)" }

    /// The OpenAI-shaped JSON body.
    public var jsonBody: ByteBuffer {
        var object: [String: JSONValue] = ["message": .string(self.message), "type": .string(self.type)]
        object["code"] = self.code.map { .string($0) } ?? .null
        return ByteBuffer(string: JSONValue.object(["error": .object(object)]).serialized())
    }

    /// The error as one SSE event, for streams that already committed.
    public var sseEvent: ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        var body = self.jsonBody
        buffer.writeBuffer(&body)
        buffer.writeString("\n\n")
        return buffer
    }
}

extension RelayError {
    public static func invalidRequest(_ message: String, code: String? = nil) -> RelayError {
        RelayError(status: .badRequest, message: message, type: "invalid_request_error", code: code)
    }

    public static func modelNotFound(_ model: String) -> RelayError {
        RelayError(
            status: .notFound,
            message: "The model '\(model)' does not exist or is not served by this gateway.",
            type: "invalid_request_error",
            code: "model_not_found"
        )
    }

    public static func notFound(_ message: String) -> RelayError {
        RelayError(status: .notFound, message: message, type: "invalid_request_error", code: "not_found")
    }

    public static func methodNotAllowed(_ message: String) -> RelayError {
        RelayError(status: .methodNotAllowed, message: message, type: "invalid_request_error", code: "method_not_allowed")
    }

    public static func bodyTooLarge(limit: Int) -> RelayError {
        RelayError(
            status: .contentTooLarge,
            message: "Request body is larger than the limit of \(limit) bytes.",
            type: "invalid_request_error",
            code: "request_too_large"
        )
    }

    /// The body could not be read as HTTP framed it (a bad chunk, or cut short).
    public static func unreadableBody(_ reason: String) -> RelayError {
        RelayError(
            status: .badRequest,
            message: "The request body could not be read: \(reason).",
            type: "invalid_request_error",
            code: "invalid_body"
        )
    }

    public static func upstreamUnreachable(_ message: String) -> RelayError {
        RelayError(status: .badGateway, message: message, type: "upstream_error", code: "upstream_unreachable")
    }

    public static func upstreamTimeout(_ message: String) -> RelayError {
        RelayError(status: .gatewayTimeout, message: message, type: "upstream_error", code: "upstream_timeout")
    }

    public static func upstreamFailed(_ message: String) -> RelayError {
        RelayError(status: .badGateway, message: message, type: "upstream_error", code: "upstream_error")
    }

    public static func internalError(_ message: String) -> RelayError {
        RelayError(status: .internalServerError, message: message, type: "server_error", code: "internal_error")
    }

    public static func shuttingDown() -> RelayError {
        RelayError(status: .serviceUnavailable, message: "The gateway is shutting down.", type: "server_error", code: "shutting_down")
    }
}
