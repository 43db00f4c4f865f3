import NIOCore
import RelayCore
import Synchronization

/// The caller of each open connection, so that a keep-alive connection's requests read
/// the kernel, the user database and `/proc` once, not once per request.
///
/// An entry goes when its connection closes (the channel's close future), so the table
/// holds no more entries than there are open connections.
final class ConnectionIdentityCache: Sendable {
    static let shared = ConnectionIdentityCache()

    private let entries = Mutex<[ObjectIdentifier: CallerIdentity]>([:])

    func identity(of channel: any Channel) -> CallerIdentity? {
        self.entries.withLock { $0[ObjectIdentifier(channel)] }
    }

    func remember(_ identity: CallerIdentity, for channel: any Channel) {
        let key = ObjectIdentifier(channel)
        self.entries.withLock { $0[key] = identity }
        // Runs at once when the channel is already closed.
        channel.closeFuture.whenComplete { _ in
            self.entries.withLock { _ = $0.removeValue(forKey: key) }
        }
    }

    var count: Int { self.entries.withLock { $0.count } }
}
