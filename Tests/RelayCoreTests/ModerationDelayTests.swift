import Foundation
import HTTPTypes
@testable import RelayCore
import Testing

/// How long `patterns` holds text back: measured on a paced stream, one character per
/// chunk every 20 ms of upstream time, and compared with the configured hold-back.
@Suite("Moderation stage: added delay of the patterns hook", .timeLimit(.minutes(1)))
struct ModerationDelayTests {
    static let pace = Duration.milliseconds(20)
    static let holdBack = 64

    /// A long answer full of near misses: beginnings of the forbidden phrase and digits.
    static let text = """
        Our plans: the project is fine, the project night shift too. A project nightjar nests \
        here; project nightingal was a typo. Call 1234-5678-9012 or 4111-1111-1111-111 for help. \
        Projects, prologues and progress: nothing to hide.
        """

    struct Measurement {
        /// For each character of the answer, how many upstream chunks later it reached the client.
        var delays: [Int]
        var received: String
    }

    /// Streams `text` one character per chunk through `stage` and notes, for every
    /// character, how many chunks the upstream had sent when it reached the client.
    func measure(_ stage: ModerationStage, text: String = Self.text) async throws -> Measurement {
        let upstream = CountingUpstream([try ModerationWire.role()] + (try text.map { try ModerationWire.content(String($0)) }) + [try ModerationWire.finish()])
        let response = try await stage.handle(try moderationRequest(), context: moderationContext()) { _, _ in
            ChatResponse(status: .ok, body: .events(upstream.stream))
        }
        guard case .events(let events) = response.body else { throw ModerationTestFailure("no stream") }
        var delays: [Int] = []
        var received = ""
        for try await event in events {
            let released = ModerationClientView(events: [event]).content
            let sentCharacters = min(upstream.pulled - 1, text.unicodeScalars.count)  // minus the role chunk
            for _ in released.unicodeScalars {
                delays.append(sentCharacters - (delays.count + 1))
            }
            received += released
        }
        return Measurement(delays: delays, received: received)
    }

    func report(_ label: String, _ measured: Measurement, holdBack: Int = Self.holdBack) -> (worst: Int, delayed: Int) {
        let worst = measured.delays.max() ?? 0
        let delayed = measured.delays.filter { $0 > 0 }.count
        let mean = Double(measured.delays.reduce(0, +)) / Double(max(1, measured.delays.count))
        print("patterns hook (\(label)): worst delay \(worst) characters = \(Self.pace * worst) at one character per \(Self.pace); "
              + "\(delayed) of \(measured.delays.count) characters delayed; mean \(String(format: "%.2f", mean)) characters; hold_back \(holdBack)")
        return (worst, delayed)
    }

    @Test("A literal rule delays text only while it may be part of the phrase: at most its length minus one, within hold_back")
    func literalDelay() async throws {
        let rule = try PatternRule(name: "codename", pattern: .literal("project nightingale"), action: .block)
        let measured = try await self.measure(ModerationStage(rules: [rule], holdBack: Self.holdBack))
        #expect(measured.received == Self.text, "nothing in it matches")
        let baseline = try await self.measure(ModerationStage(rules: [], holdBack: Self.holdBack))
        #expect(baseline.delays.allSatisfy { $0 == 0 }, "without rules nothing waits")
        let (worst, delayed) = self.report("literal", measured)
        // "project nightingal" (18 characters) waits for the " " after it.
        #expect(worst == 18)
        #expect(worst <= Self.holdBack)
        #expect(Self.pace * worst <= Self.pace * Self.holdBack)
        // Text that cannot begin the phrase is not held at all.
        let scalars = Array(Self.text.unicodeScalars)
        let firstP = try #require(scalars.firstIndex(of: "p"))
        #expect(measured.delays[..<firstP].allSatisfy { $0 == 0 })
        #expect(measured.delays.last == 0)
        #expect(Double(delayed) / Double(measured.delays.count) < 0.5, "most characters pass at once")
    }

    @Test("A regular-expression rule holds about its shortest match, more only while a match may be forming; within hold_back")
    func regexDelay() async throws {
        let card = try PatternRule(name: "card", pattern: .regex(#"\b\d{4}-\d{4}-\d{4}-\d{4}\b"#), action: .redact)
        let codename = try PatternRule(name: "codename", pattern: .literal("project nightingale"), action: .block)
        let measured = try await self.measure(ModerationStage(rules: [card, codename], holdBack: Self.holdBack))
        #expect(measured.received == Self.text)
        let (worst, _) = self.report("literal and regex", measured)
        // ICU counts a text shorter than the shortest match (19 here) as touching the end.
        #expect(worst <= 19)
        #expect(worst <= Self.holdBack)
        let greedy = try PatternRule(name: "greedy", pattern: .regex("secret[a-z ]*!"), action: .block)
        let forever = "a secret " + String(repeating: "abc ", count: 30) + "and no bang."
        let bounded = try await self.measure(ModerationStage(rules: [greedy], holdBack: 32), text: forever)
        #expect(bounded.received == forever)
        let (greedyWorst, _) = self.report("a regex that could match forever", bounded, holdBack: 32)
        #expect(greedyWorst <= 32, "a match that could go on forever is cut at hold_back")
    }

    @Test("The stage's own work per chunk is small next to the pace of a stream")
    func processingTime() async throws {
        let literal = try PatternRule(name: "codename", pattern: .literal("project nightingale"), action: .block)
        let regex = try PatternRule(name: "card", pattern: .regex(#"\b\d{4}-\d{4}-\d{4}-\d{4}\b"#), action: .redact)
        let events = [try ModerationWire.role()] + (try Self.text.map { try ModerationWire.content(String($0)) }) + [try ModerationWire.finish()]
        func time(_ stage: ModerationStage) async throws -> Duration {
            let clock = ContinuousClock()
            let start = clock.now
            for _ in 0..<4 {
                let upstream = CountingUpstream(events)
                let response = try await stage.handle(try moderationRequest(), context: moderationContext()) { _, _ in
                    ChatResponse(status: .ok, body: .events(upstream.stream))
                }
                guard case .events(let stream) = response.body else { throw ModerationTestFailure("no stream") }
                for try await _ in stream {}
            }
            return start.duration(to: clock.now) / (4 * events.count)
        }
        let none = try await time(ModerationStage(rules: [], holdBack: Self.holdBack))
        let literalOnly = try await time(ModerationStage(rules: [literal], holdBack: Self.holdBack))
        let regexOnly = try await time(ModerationStage(rules: [regex], holdBack: Self.holdBack))
        let both = try await time(ModerationStage(rules: [literal, regex], holdBack: Self.holdBack))
        print("patterns hook, work per one-character chunk: none \(none), literal \(literalOnly), regex \(regexOnly), both \(both)")
        // A measurement, not an assertion: speed is judged in the benchmarks.
        #expect(both > .zero)
    }
}
