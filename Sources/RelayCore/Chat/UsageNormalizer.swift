/// Reads a provider's `usage` object into ``TokenUsage``.
///
/// The provider's own arithmetic is kept as it is: xAI's `completion_tokens` leave the
/// reasoning out and its `total_tokens` add it back; Vercel with a Gemini upstream
/// reports more reasoning than completion tokens. The relay stores what was said and
/// "fixes" nothing, so its numbers match the provider's bill.
public enum UsageNormalizer {
    /// The token counts of one usage report; nil when it has none of the prompt,
    /// completion and total counts (a report that says nothing is not a report).
    public static func tokens(from usage: JSONValue) -> TokenUsage? {
        guard case .object(let members) = usage else { return nil }
        let tokens = TokenUsage(
            prompt: members["prompt_tokens"]?.intValue,
            completion: members["completion_tokens"]?.intValue,
            reasoning: members["completion_tokens_details"]?["reasoning_tokens"]?.intValue,
            cachedPrompt: members["prompt_tokens_details"]?["cached_tokens"]?.intValue,
            total: members["total_tokens"]?.intValue
        )
        guard tokens.prompt != nil || tokens.completion != nil || tokens.total != nil else { return nil }
        return tokens
    }

    /// The usage of a whole (non-streaming) `chat.completion` body.
    public static func tokens(fromCompletion body: JSONValue) -> TokenUsage? {
        if let usage = body["usage"], let tokens = Self.tokens(from: usage) { return tokens }
        return body["x_groq"]?["usage"].flatMap { Self.tokens(from: $0) }
    }
}
