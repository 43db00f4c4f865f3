/// The local process on the other end of the Unix socket: what the kernel says about it
/// (`SO_PEERCRED`, `SO_PEERGROUPS`), the names the user and group databases give those ids,
/// and the systemd unit it runs in (from `/proc/PID/cgroup`).
///
/// Read once per connection; the ids are the ones the caller had when it connected.
public struct CallerIdentity: Sendable, Equatable, CustomStringConvertible {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    /// The user's name (`getpwuid_r`), nil when the uid has no entry.
    public var user: String?
    /// The primary group's name (`getgrgid_r`), nil when the gid has no entry.
    public var group: String?
    /// The supplementary groups, in the kernel's (ascending) order.
    public var supplementaryGroups: [Group]
    /// The system unit the process runs in (`app-foo.service`, `session-3.scope`,
    /// `user@1000.service`), when readable: what journald calls `_SYSTEMD_UNIT`.
    public var unit: String?
    /// For a process of a user's service manager, its unit there (`_SYSTEMD_USER_UNIT`).
    public var userUnit: String?

    public init(
        uid: UInt32,
        gid: UInt32,
        pid: Int32,
        user: String? = nil,
        group: String? = nil,
        supplementaryGroups: [Group] = [],
        unit: String? = nil,
        userUnit: String? = nil
    ) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
        self.user = user
        self.group = group
        self.supplementaryGroups = supplementaryGroups
        self.unit = unit
        self.userUnit = userUnit
    }

    /// A group id and its name (nil when the group database has none).
    public struct Group: Sendable, Equatable, CustomStringConvertible {
        public var id: UInt32
        public var name: String?

        public init(id: UInt32, name: String? = nil) {
            self.id = id
            self.name = name
        }

        /// The name, or `gid:N`.
        public var description: String { self.name ?? "gid:\(self.id)" }
    }

    /// The primary group and the supplementary ones.
    public var allGroups: [Group] { [Group(id: self.gid, name: self.group)] + self.supplementaryGroups }

    /// The user's name, or `uid:N` when it has none.
    public var userLabel: String { self.user ?? "uid:\(self.uid)" }

    /// The system service the caller runs in, when it runs in one: a `.service` unit other
    /// than a user's service manager (`user@UID.service`, whose processes belong to the user).
    public var service: String? {
        guard let unit = self.unit, unit.hasSuffix(".service"), !unit.hasPrefix("user@") else { return nil }
        return unit
    }

    /// Who the caller counts as for limits, budgets and usage reports: the user
    /// (`alice`), or, for a process of a system service, the unit and its user
    /// (`app-summarize.service (svc-bot)`).
    ///
    /// A user's own services and sessions count as the user: a user can start as many
    /// of them as they like, so they must not get fresh limits. The user stays in a
    /// service's key because some services run programs for several users (cron, or
    /// sshd on a machine without logind).
    public var key: String {
        guard let service = self.service else { return self.userLabel }
        return "\(service) (\(self.userLabel))"
    }

    public var description: String {
        var text = "uid=\(self.uid)"
        if let user = self.user { text += "(\(user))" }
        text += " gid=\(self.gid)"
        if let group = self.group { text += "(\(group))" }
        text += " pid=\(self.pid)"
        if let unit = self.unit { text += " unit=\(unit)" }
        if let userUnit = self.userUnit { text += " user_unit=\(userUnit)" }
        return text
    }
}
