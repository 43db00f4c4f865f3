import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bare HTTP/1.1 client on a Unix socket, for what curl cannot do on cue: hang up in the
/// middle of a stream once a given text has arrived.
enum RawUnixClient {
    /// Sends `request`, reads until `marker` appears in the response, then closes the socket.
    /// Returns what was read. Blocking; call through `onOwnThread`.
    static func readUntil(_ marker: String, socketPath: String, request: String, timeoutSeconds: Double = 20) throws -> String {
        let fd = try Self.connect(socketPath)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw GatewayProcessError("short write") }
        var received = [UInt8]()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 100) > 0 else { continue }
            let count = read(fd, &buffer, buffer.count)
            guard count > 0 else { break }
            received += buffer[..<count]
            if String(decoding: received, as: UTF8.self).contains(marker) { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Sends each request on a connection of its own, all of them before reading any answer,
    /// then reads every answer on this one thread with `poll(2)`: lighter than a process or
    /// a thread per client when there are hundreds. An answer is done when its chunked body
    /// has ended, or when the daemon closes the connection; answers still open after
    /// `timeoutSeconds` are returned as they are. Blocking; call through `onOwnThread`.
    static func exchangeAll(_ requests: [String], socketPath: String, timeoutSeconds: Double = 60) throws -> [String] {
        let descriptors = try requests.map { _ in try Self.connect(socketPath) }
        defer { descriptors.forEach { close($0) } }
        for (fd, request) in zip(descriptors, requests) {
            let bytes = Array(request.utf8)
            guard write(fd, bytes, bytes.count) == bytes.count else { throw GatewayProcessError("short write") }
        }
        var received = [[UInt8]](repeating: [], count: requests.count)
        var open = Set(descriptors.indices)
        let lastChunk: [UInt8] = Array("\r\n0\r\n\r\n".utf8)
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while !open.isEmpty, Date() < deadline {
            let watched = open.sorted()
            var polled = watched.map { pollfd(fd: descriptors[$0], events: Int16(POLLIN), revents: 0) }
            guard poll(&polled, nfds_t(polled.count), 100) > 0 else { continue }
            for (slot, index) in watched.enumerated() where polled[slot].revents != 0 {
                let count = read(descriptors[index], &buffer, buffer.count)
                if count > 0 {
                    received[index] += buffer[..<count]
                    if received[index].count >= lastChunk.count, received[index].suffix(lastChunk.count).elementsEqual(lastChunk) { open.remove(index) }
                } else {
                    open.remove(index)
                }
            }
        }
        return received.map { String(decoding: $0, as: UTF8.self) }
    }

    /// A connected stream socket to `socketPath`; the caller closes it.
    static func connect(_ socketPath: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GatewayProcessError("socket: \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: socketPath.utf8)
            raw[socketPath.utf8.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw GatewayProcessError("connect \(socketPath): \(reason)")
        }
        return fd
    }

    /// A POST of a JSON body as raw HTTP/1.1.
    static func post(_ path: String, json: String) -> String {
        "POST \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n\r\n\(json)"
    }
}
