import NIOCore
import RelayCore

extension StreamEvent {
    /// The concatenated `content` of a chunk's deltas, read from its bytes: the facts the
    /// relay reads do not keep text (a chunk's facts are shared by the chunks that repeat it).
    var contentText: String {
        guard let data = self.frame.data, case .object(let chunk)? = try? JSONValue(parsing: data.readableBytesView) else { return "" }
        return (chunk["choices"]?.arrayValue ?? []).compactMap { $0["delta"]?["content"]?.stringValue }.joined()
    }
}
