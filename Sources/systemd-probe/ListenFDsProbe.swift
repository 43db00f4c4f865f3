import Systemd

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reports what `ListenFDs` sees when started by `systemd-socket-activate`, one `key=value`
/// per line on stdout, for the socket-activation test to compare.
enum ListenFDsProbe {
    static func run(path: String) -> Int32 {
        do {
            let inherited = try ListenFDs.fromEnvironment()
            print("count=\(inherited.sockets.count)")
            for (fd, name) in inherited.sockets {
                print("socket=\(fd):\(name)")
            }
            if let fd = inherited.socket(named: "gateway") {
                print("gateway=\(fd)")
                print("listener=\(ListenFDs.isUnixStreamListener(fd: fd))")
                print("listenerAtPath=\(ListenFDs.isUnixStreamListener(fd: fd, path: path))")
                print("listenerAtOtherPath=\(ListenFDs.isUnixStreamListener(fd: fd, path: path + ".other"))")
            }
            ListenFDs.unsetEnvironment()
            let leftOver: [String] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"].filter { getenv($0) != nil }
            print("environmentAfterUnset=\(leftOver.isEmpty ? "absent" : leftOver.joined(separator: ","))")
            return 0
        } catch {
            print("error=\(error)")
            return 1
        }
    }
}
