import Logging
import RelayCore

extension Logger {
    /// Adds the caller to every entry this logger writes; in the journal they become
    /// `CALLER` (the key limits and reports use), `CALLER_UID`, `CALLER_GID`, `CALLER_PID`,
    /// `CALLER_USER`, `CALLER_GROUP`, `CALLER_GROUPS` (supplementary, comma-separated),
    /// `CALLER_UNIT` and `CALLER_USER_UNIT`.
    mutating func annotate(caller: CallerIdentity) {
        self[metadataKey: "caller"] = .string(caller.key)
        self[metadataKey: "caller_uid"] = .stringConvertible(caller.uid)
        self[metadataKey: "caller_gid"] = .stringConvertible(caller.gid)
        self[metadataKey: "caller_pid"] = .stringConvertible(caller.pid)
        if let user = caller.user { self[metadataKey: "caller_user"] = .string(user) }
        if let group = caller.group { self[metadataKey: "caller_group"] = .string(group) }
        if !caller.supplementaryGroups.isEmpty {
            self[metadataKey: "caller_groups"] = .string(caller.supplementaryGroups.map(\.description).joined(separator: ","))
        }
        if let unit = caller.unit { self[metadataKey: "caller_unit"] = .string(unit) }
        if let userUnit = caller.userUnit { self[metadataKey: "caller_user_unit"] = .string(userUnit) }
    }
}
