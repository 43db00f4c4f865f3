import NIOCore

/// How the requests of one kind went.
struct KindTally: Codable, Sendable {
    var sent = 0
    var answeredAsExpected = 0
    var failures: [String: Int] = [:]
    var contentChunks = 0
    var dataEvents = 0

    mutating func merge(_ other: KindTally) {
        self.sent += other.sent
        self.answeredAsExpected += other.answeredAsExpected
        self.failures.merge(other.failures, uniquingKeysWith: +)
        self.contentChunks += other.contentChunks
        self.dataEvents += other.dataEvents
    }
}

/// What one worker did.
struct WorkerTally: Sendable {
    var kinds: [SoakRequestKind: KindTally] = [:]
    var connectionsOpened = 0
    /// Requests sent on a kept-alive connection that the relay had closed (no byte of an
    /// answer), sent again on a new one, as an HTTP client does with a stale pooled connection.
    var staleConnectionRetries = 0

    mutating func merge(_ other: WorkerTally) {
        self.kinds.merge(other.kinds) { var merged = $0; merged.merge($1); return merged }
        self.connectionsOpened += other.connectionsOpened
        self.staleConnectionRetries += other.staleConnectionRetries
    }
}

/// One client: takes the next request of the run, sends it on its kept-alive connection,
/// and opens a new connection when the last one ended (a hang-up, `Connection: close`, a
/// failure), until the run's requests are all handed out.
struct SoakWorker: Sendable {
    let socketPath: String
    let group: any EventLoopGroup
    let progress: SoakProgress
    let idleTimeout: TimeAmount

    func run() async -> WorkerTally {
        var tally = WorkerTally()
        var next = await self.progress.takeRequest()
        while let first = next {
            let channel: SoakConnection.Channel
            do {
                channel = try await SoakConnection.open(socketPath: self.socketPath, group: self.group, idleTimeout: self.idleTimeout)
                tally.connectionsOpened += 1
            } catch {
                self.record(SoakAnswer(), kind: self.progress.kind(of: first), failure: "connect_failed", into: &tally)
                next = await self.progress.takeRequest()
                continue
            }
            // Sends requests on this connection while it stays usable; then `next` is the
            // request still to send on a new one, if any.
            next = nil
            _ = try? await channel.executeThenClose { inbound, outbound in
                var responses = inbound.makeAsyncIterator()
                var current: Int? = first
                var answeredOnThisConnection = 0
                while let index = current {
                    let kind = self.progress.kind(of: index)
                    let answer: SoakAnswer
                    do {
                        answer = try await SoakConnection.exchange(kind, outbound: outbound, responses: &responses)
                    } catch {
                        answer = SoakAnswer()
                    }
                    if answer.status == nil, answeredOnThisConnection > 0 {
                        // The relay had closed the kept-alive connection: again, on a new one.
                        tally.staleConnectionRetries += 1
                        next = index
                        return
                    }
                    answeredOnThisConnection += 1
                    let failure = answer.failure(for: kind)
                    self.record(answer, kind: kind, failure: failure, into: &tally)
                    current = await self.progress.takeRequest()
                    if !answer.connectionReusable || failure != nil {
                        next = current
                        return
                    }
                }
            }
        }
        return tally
    }

    private func record(_ answer: SoakAnswer, kind: SoakRequestKind, failure: String?, into tally: inout WorkerTally) {
        var kindTally = tally.kinds[kind] ?? KindTally()
        kindTally.sent += 1
        if let failure {
            kindTally.failures[failure, default: 0] += 1
        } else {
            kindTally.answeredAsExpected += 1
        }
        kindTally.contentChunks += answer.contentChunks
        kindTally.dataEvents += answer.dataEvents
        tally.kinds[kind] = kindTally
        self.progress.finished(contentChunks: answer.contentChunks)
    }
}
