import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Throwaway local users and groups for tests that connect as somebody else, and curl run
/// as one of them (`setpriv` drops root's ids in the child, with the user's groups).
///
/// Names carry a random tag (`crp1a2b3c-alice`) so runs never meet, and everything is
/// deleted again by ``withAccounts(users:groups:_:)`` whatever the test does.
struct TestAccounts: Sendable {
    /// A test user: its name and ids.
    struct User: Sendable {
        var name: String
        var uid: UInt32
        var gid: UInt32
    }

    let tag: String
    private(set) var users: [String: User] = [:]
    private(set) var groups: [String: String] = [:]
    private(set) var groupIDs: [String: UInt32] = [:]

    /// Root, `useradd`, `groupadd` and `setpriv`: what these tests need.
    static var available: Bool {
        getuid() == 0 && ["/usr/sbin/useradd", "/usr/sbin/userdel", "/usr/sbin/groupadd", "/usr/sbin/groupdel", "/usr/bin/setpriv"]
            .allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The real name of the test group or user called `role` in the test.
    func group(_ role: String) -> String { self.groups[role]! }
    func user(_ role: String) -> User { self.users[role]! }

    /// Creates `groups` (roles), then `users`: each with a private primary group unless
    /// `primary` names a test group, and with `supplementary` test groups. Runs `body`, then
    /// deletes them all.
    static func withAccounts<T>(
        users: [(role: String, primary: String?, supplementary: [String])],
        groups: [String] = [],
        _ body: (TestAccounts) async throws -> T
    ) async throws -> T {
        var accounts = TestAccounts(tag: "crp" + String(UInt32.random(in: 0...UInt32.max), radix: 16))
        do {
            for role in groups {
                let name = "\(accounts.tag)-\(role)"
                try await Self.run("/usr/sbin/groupadd", [name])
                accounts.groups[role] = name
                accounts.groupIDs[role] = try await Self.id("-g", of: name, group: true)
            }
            for user in users {
                let name = "\(accounts.tag)-\(user.role)"
                var arguments = ["--no-create-home", "--shell", "/usr/sbin/nologin"]
                if let primary = user.primary {
                    arguments += ["--no-user-group", "--gid", accounts.group(primary)]
                } else {
                    arguments += ["--user-group"]
                }
                if !user.supplementary.isEmpty {
                    arguments += ["--groups", user.supplementary.map(accounts.group).joined(separator: ",")]
                }
                try await Self.run("/usr/sbin/useradd", arguments + [name])
                accounts.users[user.role] = User(name: name, uid: try await Self.id("-u", of: name), gid: try await Self.id("-g", of: name))
            }
        } catch {
            await accounts.remove()
            throw error
        }
        do {
            let result = try await body(accounts)
            await accounts.remove()
            return result
        } catch {
            await accounts.remove()
            throw error
        }
    }

    private func remove() async {
        for user in self.users.values {
            _ = try? await runProcess("/usr/sbin/userdel", [user.name])
            _ = try? await runProcess("/usr/sbin/groupdel", [user.name])  // the private group, if userdel left it
        }
        for name in self.groups.values {
            _ = try? await runProcess("/usr/sbin/groupdel", [name])
        }
    }

    private static func run(_ tool: String, _ arguments: [String]) async throws {
        let result = try await runProcess(tool, arguments)
        guard result.status == 0 else { throw GatewayProcessError("\(tool) \(arguments.joined(separator: " ")): \(result.standardError)") }
    }

    private static func id(_ flag: String, of name: String, group: Bool = false) async throws -> UInt32 {
        let result = group ? try await runProcess("/usr/bin/getent", ["group", name]) : try await runProcess("/usr/bin/id", [flag, name])
        let text = result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let field = group ? text.split(separator: ":", omittingEmptySubsequences: false).dropFirst(2).first.map(String.init) : text
        guard result.status == 0, let value = field.flatMap({ UInt32($0) }) else { throw GatewayProcessError("no id for \(name): \(result.standardError)") }
        return value
    }

    /// The arguments that run `command` as `user`, with the user's groups from the group database.
    static func asUser(_ user: User, _ command: [String]) -> [String] {
        ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--"] + command
    }
}

/// Calls the gateway with curl as `user` (setpriv drops to the user's ids and groups); the
/// response head and body come back on curl's standard output (`-i`).
func curl(as user: TestAccounts.User, _ socket: String, _ method: String = "GET", _ path: String, body: String? = nil) async throws -> CurlResponse {
    var command = [TestPaths.curl, "-sS", "-N", "-i", "--unix-socket", socket, "-X", method]
    if body != nil { command += ["-H", "Content-Type: application/json", "--data-binary", "@-"] }
    command.append("http://localhost" + path)
    let result = try await runProcess("/usr/bin/setpriv", TestAccounts.asUser(user, command), input: body.map { Data($0.utf8) })
    guard let split = result.standardOutput.range(of: "\r\n\r\n") else {
        throw GatewayProcessError("curl as \(user.name) failed (\(result.status)): \(result.standardError) \(result.standardOutput)")
    }
    var status = 0
    var headers: [String: String] = [:]
    for line in result.standardOutput[..<split.lowerBound].components(separatedBy: "\r\n") {
        if line.hasPrefix("HTTP/") {
            status = Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        } else if let colon = line.firstIndex(of: ":") {
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    return CurlResponse(status: status, headers: headers, body: String(result.standardOutput[split.upperBound...]))
}
