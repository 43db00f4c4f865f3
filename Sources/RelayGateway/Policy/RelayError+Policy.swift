import HTTPTypes
import RelayCore

/// The policy's denials, shaped as OpenAI's own: `permission_error`/`permission_denied`
/// (403), `requests`/`rate_limit_exceeded` (429) and `insufficient_quota` (429).
extension RelayError {
    static func permissionDenied(_ message: String) -> RelayError {
        RelayError(status: .forbidden, message: message, type: "permission_error", code: "permission_denied")
    }

    static func rateLimitExceeded(_ message: String, retryAfter seconds: Int) -> RelayError {
        var headers = HTTPFields()
        headers[.retryAfter] = String(seconds)
        return RelayError(status: .tooManyRequests, message: message, type: "requests", code: "rate_limit_exceeded", headers: headers)
    }

    static func insufficientQuota(_ message: String, retryAfter seconds: Int) -> RelayError {
        var headers = HTTPFields()
        headers[.retryAfter] = String(seconds)
        return RelayError(status: .tooManyRequests, message: message, type: "insufficient_quota", code: "insufficient_quota", headers: headers)
    }
}
