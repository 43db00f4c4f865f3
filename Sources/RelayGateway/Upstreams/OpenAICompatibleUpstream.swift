import Foundation
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
public import RelayCore

/// An upstream that speaks the OpenAI Chat Completions API over HTTP(S): OpenAI, xAI,
/// OpenRouter, Groq, a local vLLM or llama.cpp.
///
/// The body goes out as the pipeline left it, on a keep-alive HTTP/1.1 connection of the
/// relay's own (``UpstreamCall``); the response streams back through
/// ``UpstreamResponseAdapter`` as it arrives, one read at a time, so a slow client slows
/// this read. Cancelling the calling task cancels the HTTP request.
public struct OpenAICompatibleUpstream: ChatUpstream {
    public let name: String
    /// The request head but for `Accept` and `Content-Length`; nil when the upstream cannot
    /// be used (see `unusableReason`).
    private let requestHead: HTTP1RequestHead?
    /// Where requests go; nil when the upstream cannot be used (see `unusableReason`).
    private let target: HTTP1Target?
    private let totalTimeout: Duration
    private let idleTimeout: Duration
    /// The head and idle timeouts of every call, with their messages: made once here, not
    /// per request.
    private let timeouts: UpstreamCall.Timeouts
    private let maximumEventSize: Int
    private let maximumBodySize: Int
    /// Why requests cannot be sent (a missing key), if they cannot.
    private let unusableReason: String?

    init(
        settings: UpstreamSettings,
        target: Result<HTTP1Target, ConfigError>,
        apiKey: Result<String?, ConfigError>,
        maximumEventSize: Int,
        maximumBodySize: Int
    ) {
        self.name = settings.name
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in settings.headers.sorted(by: { $0.key < $1.key }) {
            headers.replaceOrAdd(name: name, value: value)
        }
        var unusableReason: String?
        switch apiKey {
        case .success(let key?):
            headers.replaceOrAdd(name: "Authorization", value: "Bearer \(key)")
        case .success(nil):
            break
        case .failure(let error):
            unusableReason = error.description
        }
        switch target {
        case .success(let target):
            self.target = target
            headers.replaceOrAdd(name: "Host", value: target.hostHeader)
        case .failure(let error):
            self.target = nil
            unusableReason = unusableReason ?? error.description
        }
        // Each request sets these.
        headers.remove(name: "Accept")
        headers.remove(name: "Content-Length")
        var requestHead: HTTP1RequestHead?
        if let target = self.target {
            do {
                requestHead = try HTTP1RequestHead(method: .POST, uri: target.requestURI, headers: headers)
            } catch {
                unusableReason = unusableReason ?? error.description
            }
        }
        self.requestHead = requestHead
        self.unusableReason = unusableReason
        let (head, total, idle) = (settings.headTimeout.duration, settings.totalTimeout.duration, settings.idleTimeout.duration)
        self.totalTimeout = total
        self.idleTimeout = idle
        self.timeouts = UpstreamCall.Timeouts(
            head: min(head, total),
            headError: head <= total
                ? .upstreamTimeout("Upstream '\(settings.name)' sent no response head within \(head).")
                : UpstreamDeadline.exceeded(upstream: settings.name),
            idle: idle,
            idleError: .upstreamTimeout("Upstream '\(settings.name)' sent nothing for longer than its idle timeout.")
        )
        self.maximumEventSize = maximumEventSize
        self.maximumBodySize = maximumBodySize
    }

    public func send(_ request: ChatRequest, context: StageContext) async throws -> ChatResponse {
        if let reason = self.unusableReason {
            throw RelayError(
                status: .serviceUnavailable,
                message: "Upstream '\(self.name)' is not usable: \(reason)",
                type: "server_error",
                code: "upstream_not_configured"
            )
        }
        let upstreamName = self.name
        let mapError: @Sendable (any Error) -> RelayError = { Self.relayError(for: $0, upstream: upstreamName) }
        context.record.update { $0.attempts += 1 }
        let total = UpstreamDeadline(instant: .now + self.totalTimeout, upstream: self.name)
        guard let target = self.target, let requestHead = self.requestHead else {
            throw RelayError.internalError("Upstream '\(self.name)' has no target.")
        }
        let head = requestHead.bytes(
            accept: request.stream ? "text/event-stream" : "application/json",
            contentLength: request.body.readableBytes
        )
        let (call, body) = UpstreamCall.make(
            pool: target.pools.next(), upstream: self.name, head: head, body: request.body, timeouts: self.timeouts
        )
        let response: HTTPResponseHead
        do {
            response = try await call.start()
        } catch let error as RelayError {
            throw error
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw mapError(error)
        }
        var passthrough = HTTPFields()
        for (name, value) in response.headers where Self.passedThrough(name) {
            if let field = HTTPField.Name(name) { passthrough.append(HTTPField(name: field, value: value)) }
        }
        return try await UpstreamResponseAdapter.makeResponse(
            status: HTTPResponse.Status(code: Int(response.status.code)),
            contentType: response.headers.first(name: "content-type"),
            passthroughHeaders: passthrough,
            body: body,
            streamRequested: request.stream,
            maximumEventSize: self.maximumEventSize,
            maximumBodySize: self.maximumBodySize,
            commentsOnlyTimeout: CommentsOnlyTimeout(limit: self.idleTimeout, upstream: self.name),
            deadline: total,
            mapError: mapError
        )
    }

    /// The upstream's chat endpoint: its base URL and `/chat/completions`.
    static func chatURL(for settings: UpstreamSettings) -> String {
        var base = settings.baseURL ?? ""
        while base.hasSuffix("/") { base.removeLast() }
        return base + "/chat/completions"
    }

    /// Upstream headers worth handing to the client: rate limits and retry hints.
    static func passedThrough(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower == "retry-after" || lower.hasPrefix("x-ratelimit-") || lower == "openai-processing-ms"
    }

    /// Maps transport failures to what the client is told; never includes a credential.
    static func relayError(for error: any Error, upstream: String) -> RelayError {
        if let relay = error as? RelayError { return relay }
        if error is NIOConnectionError || error is IOError || error is SocketAddressError {
            return .upstreamUnreachable("Upstream '\(upstream)' is unreachable (\(Self.shortDescription(error))).")
        }
        if let channelError = error as? ChannelError, case .connectTimeout = channelError {
            return .upstreamTimeout("Connecting to upstream '\(upstream)' timed out.")
        }
        if let tls = error as? NIOSSLError, case .handshakeFailed = tls {
            return .upstreamUnreachable("Upstream '\(upstream)' failed the TLS handshake (\(Self.shortDescription(error))).")
        }
        return .upstreamFailed("Upstream '\(upstream)' failed: \(Self.shortDescription(error)).")
    }

    private static func shortDescription(_ error: any Error) -> String {
        if let connection = error as? NIOConnectionError {
            let reasons = connection.connectionErrors.map { "\($0.error)" }
            return reasons.first ?? "\(connection)"
        }
        return "\(error)"
    }
}

/// Reads an upstream's API key from where its settings say.
enum APIKeySource {
    static func resolve(_ settings: UpstreamSettings, environment: [String: String]) -> Result<String?, ConfigError> {
        func trimmed(_ text: String) -> String { text.trimmingCharacters(in: .whitespacesAndNewlines) }
        if let variable = settings.apiKeyEnv {
            guard let value = environment[variable], !trimmed(value).isEmpty else {
                return .failure(ConfigError("environment variable \(variable) is not set"))
            }
            return .success(trimmed(value))
        }
        if let path = settings.apiKeyFile {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), !trimmed(text).isEmpty else {
                return .failure(ConfigError("API key file \(path) cannot be read or is empty"))
            }
            return .success(trimmed(text))
        }
        if let credential = settings.apiKeyCredential {
            guard let directory = environment["CREDENTIALS_DIRECTORY"] else {
                return .failure(ConfigError("credential '\(credential)' needs $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)"))
            }
            guard let text = try? String(contentsOfFile: directory + "/" + credential, encoding: .utf8), !trimmed(text).isEmpty else {
                return .failure(ConfigError("credential '\(credential)' cannot be read from $CREDENTIALS_DIRECTORY"))
            }
            return .success(trimmed(text))
        }
        return .success(nil)
    }
}

/// Where requests to an upstream go on our own connections: its pools, and the request
/// line's target and `Host` for its chat endpoint.
struct HTTP1Target: Sendable {
    let pools: UpstreamConnectionPools
    let requestURI: String
    let hostHeader: String

    struct Parsed {
        var host: String
        var port: Int
        var usesTLS: Bool
        var requestURI: String
        var hostHeader: String
    }

    /// Host, port and path of an `http://` or `https://` URL; nil for any other.
    static func parse(_ url: String) -> Parsed? {
        guard let parsed = URL(string: url), let scheme = parsed.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = parsed.host, !host.isEmpty
        else { return nil }
        let usesTLS = scheme == "https"
        let port = parsed.port ?? (usesTLS ? 443 : 80)
        var requestURI = parsed.path(percentEncoded: true)
        if requestURI.isEmpty { requestURI = "/" }
        if let query = parsed.query(percentEncoded: true) { requestURI += "?" + query }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return Parsed(
            host: host, port: port, usesTLS: usesTLS, requestURI: requestURI,
            hostHeader: parsed.port == nil ? bracketed : "\(bracketed):\(port)"
        )
    }
}
