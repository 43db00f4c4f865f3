import Foundation
import RelayCore

extension StageEntry {
    /// The entry with the paths in its options made absolute against `resolve`.
    ///
    /// Stages get only their options, not the config file's folder, so the loader resolves
    /// for them every string under a key named `file` or ending in `_file` or `_path`, at
    /// any depth (a moderation stage's `hooks[].file` and `hooks[].socket_path`).
    func resolvingPaths(_ resolve: (String) -> String) -> StageEntry {
        func walk(_ value: JSONValue, key: String?) -> JSONValue {
            switch value {
            case .string(let text):
                guard let key, key == "file" || key.hasSuffix("_file") || key.hasSuffix("_path"), !text.isEmpty else { return value }
                return .string(resolve(text))
            case .array(let items):
                return .array(items.map { walk($0, key: key) })
            case .object(let members):
                return .object(members.reduce(into: [:]) { $0[$1.key] = walk($1.value, key: $1.key) })
            default:
                return value
            }
        }
        var entry = self
        entry.options = self.options.reduce(into: [:]) { $0[$1.key] = walk($1.value, key: $1.key) }
        return entry
    }
}
