import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RelayCore

/// Moderation hook kind `http`: POSTs each window to a moderation service, over TCP or a
/// Unix socket.
///
/// The body is what OpenAI's `/v1/moderations` takes, `{"input": TEXT}` (with `"model"` when
/// configured), so the hook can point at OpenAI itself; `X-Request-Id` and
/// `X-Chatrelay-Where` headers say which request and which part of it the text is from.
/// The answer may be OpenAI's shape (`results[].flagged` and `categories`: a flagged
/// result means `flagged_action` and names the true categories) or the simple
/// `{"action": ..., "replacement": ..., "rule": ...}`. An answer other than 2xx, one that
/// is not JSON, or no answer within the hook's `timeout` is a failure (`on_failure`).
///
/// Options: `url` (http or https), `socket_path` (connect to this Unix socket instead;
/// the URL then gives only the path), `headers`, `api_key_env` (a variable whose value is
/// sent as `Authorization: Bearer`), `model`.
struct HTTPModerationHook: ModerationHook {
    let url: String
    let headers: HTTPHeaders
    let model: String?
    let flaggedAction: ModerationAction
    /// A backstop for AsyncHTTPClient; the stage's timeout cancels the call first.
    let requestTimeout: Duration
    static let maximumAnswerSize = 1 << 20

    static func make(options: inout StageOptions, settings: ExternalHookSettings) throws -> any ModerationHook {
        guard let address = try options.string("url", default: nil), let parsed = URL(string: address),
            parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil
        else {
            throw options.error("url", "must be an http(s) URL such as http://127.0.0.1:8080/v1/moderations")
        }
        var url = address
        if let socket = try options.string("socket_path", default: nil) {
            var path = parsed.path.isEmpty ? "/" : parsed.path
            if let query = parsed.query { path += "?" + query }
            guard let unixURL = URL(httpURLWithSocketPath: socket, uri: path) else {
                throw options.error("socket_path", "'\(socket)' cannot be used as a socket path")
            }
            url = unixURL.absoluteString
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        if let value = options.take("headers") {
            guard let members = value.objectValue, members.values.allSatisfy({ $0.stringValue != nil }) else {
                throw options.error("headers", "must be a mapping of header names to strings")
            }
            for (name, text) in members.sorted(by: { $0.key < $1.key }) { headers.replaceOrAdd(name: name, value: text.stringValue!) }
        }
        if let variable = try options.string("api_key_env", default: nil) {
            guard let key = ProcessInfo.processInfo.environment[variable]?.trimmingCharacters(in: .whitespacesAndNewlines), !key.isEmpty else {
                throw options.error("api_key_env", "environment variable \(variable) is not set")
            }
            headers.replaceOrAdd(name: "Authorization", value: "Bearer \(key)")
        }
        let model = try options.string("model", default: nil)
        return HTTPModerationHook(
            url: url, headers: headers, model: model, flaggedAction: settings.flaggedAction, requestTimeout: settings.timeout + .seconds(1)
        )
    }

    func check(_ input: ModerationHookInput) async throws -> ModerationHookAnswer {
        var body: [String: JSONValue] = ["input": .string(input.text)]
        if let model = self.model { body["model"] = .string(model) }
        var request = HTTPClientRequest(url: self.url)
        request.method = .POST
        request.headers = self.headers
        request.headers.replaceOrAdd(name: "X-Request-Id", value: input.requestID)
        request.headers.replaceOrAdd(name: "X-Chatrelay-Where", value: input.location)
        request.body = .bytes(ByteBuffer(string: JSONValue.object(body).serialized()))
        let answer: ByteBuffer
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: TimeAmount(self.requestTimeout))
            guard (200..<300).contains(response.status.code) else {
                throw ModerationHookError.unreachable("the service answered HTTP \(response.status.code)")
            }
            answer = try await response.body.collect(upTo: Self.maximumAnswerSize)
        } catch let error as ModerationHookError {
            throw error
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw ModerationHookError.unreachable("\(error)")
        }
        guard let document = try? JSONValue(parsing: answer.readableBytesView) else { throw ModerationHookError.badAnswer("the answer is not JSON") }
        return try ModerationHookAnswer(json: document, flaggedAction: self.flaggedAction)
    }
}
