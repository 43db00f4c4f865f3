import Logging
import RelayCore

extension Logger.Metadata {
    /// Adds the caller to a logger's metadata, for every entry it writes; in the journal
    /// they become `CALLER` (the key limits and reports use), `CALLER_UID`, `CALLER_GID`,
    /// `CALLER_PID`, `CALLER_USER`, `CALLER_GROUP`, `CALLER_GROUPS` (supplementary,
    /// comma-separated), `CALLER_UNIT` and `CALLER_USER_UNIT`. Set in the dictionary the
    /// request's logger then takes whole: set one by one through the logger, each went
    /// through its handler's copy-on-write box (about 8,000 instructions a request).
    mutating func annotate(caller: CallerIdentity) {
        self["caller"] = .string(caller.key)
        self["caller_uid"] = .stringConvertible(caller.uid)
        self["caller_gid"] = .stringConvertible(caller.gid)
        self["caller_pid"] = .stringConvertible(caller.pid)
        if let user = caller.user { self["caller_user"] = .string(user) }
        if let group = caller.group { self["caller_group"] = .string(group) }
        if !caller.supplementaryGroups.isEmpty {
            self["caller_groups"] = .string(caller.supplementaryGroups.map(\.description).joined(separator: ","))
        }
        if let unit = caller.unit { self["caller_unit"] = .string(unit) }
        if let userUnit = caller.userUnit { self["caller_user_unit"] = .string(userUnit) }
    }
}
