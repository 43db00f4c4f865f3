import Foundation
import NIOCore

/// The moderation stage's view of a response stream: each checked field's text held back
/// until it is clear, chunks rewritten to carry what was released, and the stream cut
/// short with `finish_reason: "content_filter"` when something blocks.
///
/// A chunk whose checked text all went on unchanged is forwarded byte for byte. Otherwise
/// its JSON is serialised again with the released text in place of the upstream's (every
/// other member kept); a chunk left with nothing to say (its only payload was held text)
/// is dropped. Held text rides out on the next chunk of the same channel; what is still
/// held when a choice finishes, at `[DONE]`, or at the end of the stream goes out in a
/// chunk the stage makes (the envelope of the latest upstream chunk, one choice, one
/// field) just before the finish chunk or `[DONE]`. An upstream error event discards what
/// is held. Other events (comments, heartbeats, usage-only chunks) pass at once. A choice
/// whose text was rewritten loses its `logprobs` in that chunk, since they would spell out
/// the held or redacted tokens.
struct ModerationEventSequence: AsyncSequence, Sendable {
    typealias Element = StreamEvent

    let base: EventStream
    let checker: ModerationChecker
    let fields: ModerationOutputFields
    let recorder: ModerationRecorder
    let requestID: String
    let model: String

    func makeAsyncIterator() -> Iterator {
        Iterator(
            base: self.base.makeAsyncIterator(), checker: self.checker, fields: self.fields, recorder: self.recorder,
            requestID: self.requestID, model: self.model
        )
    }

    struct Iterator: DeadlineIterator {
        /// Upstream; nil once the stream was blocked (dropping it releases the upstream request).
        var base: EventStream.Iterator?
        let checker: ModerationChecker
        let fields: ModerationOutputFields
        let recorder: ModerationRecorder
        let requestID: String
        let model: String
        private var held: [ModerationChannelKey: HeldText] = [:]
        /// Channels in the order they first carried text, so that flushing is deterministic.
        private var order: [ModerationChannelKey] = []
        private var detailTemplates: [ModerationChannelKey: JSONValue] = [:]
        /// The latest upstream chunk's envelope (id, model, created...), for chunks the stage makes.
        private var envelope: [String: JSONValue] = [:]
        private var choicesSeen: Set<Int> = []
        /// Events ready to go, oldest first; at most one upstream event's worth.
        private var outbox: [StreamEvent] = []
        private var blocked = false

        init(
            base: EventStream.Iterator, checker: ModerationChecker, fields: ModerationOutputFields, recorder: ModerationRecorder,
            requestID: String, model: String
        ) {
            self.base = base
            self.checker = checker
            self.fields = fields
            self.recorder = recorder
            self.requestID = requestID
            self.model = model
        }

        mutating func next() async throws -> StreamEvent? {
            while true {
                if !self.outbox.isEmpty { return self.outbox.removeFirst() }
                guard self.base != nil else { return nil }
                try await self.take(try await self.base!.next())
            }
        }

        /// Only for a stream made with deadlines (patterns alone, see ``ModerationStage``):
        /// a wait for an external hook is not cut short by the deadline.
        nonisolated(nonsending) mutating func next(before deadline: ContinuousClock.Instant) async throws -> NextBeforeDeadline<StreamEvent> {
            while true {
                if !self.outbox.isEmpty { return .element(self.outbox.removeFirst()) }
                guard self.base != nil else { return .end }
                switch try await self.base!.next(before: deadline) {
                case .element(let event): try await self.take(event)
                case .end: try await self.take(nil)
                case .deadlinePassed: return .deadlinePassed
                }
            }
        }

        /// Takes an upstream event (nil: the end) in; what goes on lands in the outbox.
        nonisolated(nonsending) private mutating func take(_ event: StreamEvent?) async throws {
            guard let event else {
                try await self.flushAll()
                self.base = nil
                return
            }
            switch event.kind {
            case .chunk:
                try await self.receive(event)
            case .done:
                try await self.flushAll()
                if !self.blocked { self.outbox.append(event) }
            case .error:
                self.held.removeAll()
                self.order.removeAll()
                self.outbox.append(event)
            case .comment, .heartbeat, .other:
                self.outbox.append(event)
            }
        }

        nonisolated(nonsending) private mutating func receive(_ event: StreamEvent) async throws {
            guard event.facts?.carriesContent == true, let data = event.frame.data,
                case .object(var object)? = try? JSONValue(parsingTransient: data.readableBytesView),
                case .array(var choices)? = object["choices"]
            else {
                self.outbox.append(event)
                return
            }
            self.noteEnvelope(object)
            var changed = false
            var releases: [StreamEvent] = []
            for position in choices.indices {
                guard case .object(var choice) = choices[position] else { continue }
                let index = choice["index"]?.intValue ?? position
                self.choicesSeen.insert(index)
                let finishing = choice["finish_reason"]?.stringValue != nil
                var touched: Set<ModerationChannelKey> = []
                if case .object(var delta)? = choice["delta"] {
                    var deltaChanged = false
                    for (field, text) in ModeratedField.texts(in: delta, fields: self.fields) {
                        let key = ModerationChannelKey(choice: index, field: field)
                        touched.insert(key)
                        if field == .reasoningDetails, let template = ModeratedField.detailTemplate(in: delta) {
                            self.detailTemplates[key] = template
                        }
                        guard let released = try await self.update(key, adding: text, final: finishing) else { return }
                        if released != text {
                            field.set(released, in: &delta)
                            deltaChanged = true
                        }
                    }
                    if deltaChanged {
                        choice["delta"] = .object(delta)
                        // Log probabilities name the upstream's tokens, held or redacted ones too.
                        if let logprobs = choice["logprobs"], logprobs != .null { choice["logprobs"] = .null }
                        choices[position] = .object(choice)
                        changed = true
                    }
                }
                if finishing {
                    // Whatever this choice still holds on channels this chunk did not carry
                    // goes out before its finish.
                    for key in self.order where key.choice == index && !touched.contains(key) {
                        guard let released = try await self.update(key, adding: "", final: true) else { return }
                        if !released.isEmpty { releases.append(self.releaseChunk(key, released)) }
                    }
                    self.order.removeAll { $0.choice == index }
                }
            }
            self.outbox.append(contentsOf: releases)
            guard changed else {
                self.outbox.append(event)
                return
            }
            object["choices"] = .array(choices)
            let facts = ChunkFacts(object)
            guard facts.carriesPayload || facts.hasRole else { return }  // it only carried held text
            var rewritten = StreamEvent.data(.object(object), kind: .chunk)
            rewritten.facts = facts
            self.outbox.append(rewritten)
        }

        /// Feeds one channel; returns the text released, or nil when the stream was blocked.
        nonisolated(nonsending) private mutating func update(_ key: ModerationChannelKey, adding text: String, final: Bool) async throws -> String? {
            var held: HeldText
            if let existing = self.held.removeValue(forKey: key) {
                held = existing
            } else {
                held = self.checker.makeHeldText()
                self.order.append(key)
            }
            let update = try await self.checker.update(
                &held, adding: text, final: final, location: key.field.location, requestID: self.requestID, model: self.model
            )
            self.recorder.note(update.verdicts)
            if let verdict = update.blocked {
                self.block(verdict)
                return nil
            }
            if final {
                self.order.removeAll { $0 == key }
            } else {
                self.held[key] = held
            }
            return update.released
        }

        /// Releases everything held: the stream is over (`[DONE]`, or its end).
        nonisolated(nonsending) private mutating func flushAll() async throws {
            let keys = self.order
            for key in keys {
                guard let released = try await self.update(key, adding: "", final: true) else { return }
                if !released.isEmpty { self.outbox.append(self.releaseChunk(key, released)) }
            }
        }

        /// Ends the stream: one chunk with `finish_reason: "content_filter"` for every choice
        /// seen, then `[DONE]`; upstream is not read again.
        private mutating func block(_ verdict: ModerationVerdict) {
            self.blocked = true
            self.held.removeAll()
            self.order.removeAll()
            self.outbox.removeAll()
            var chunk = self.chunkEnvelope
            let indexes = self.choicesSeen.isEmpty ? [0] : self.choicesSeen.sorted()
            chunk["choices"] = .array(
                indexes.map { ["index": .number(Double($0)), "delta": [:], "finish_reason": "content_filter"] }
            )
            self.outbox = [Self.madeChunk(chunk), .done]
            self.base = nil
            self.recorder.record.update { $0.finishReason = "content_filter" }
        }

        private func releaseChunk(_ key: ModerationChannelKey, _ text: String) -> StreamEvent {
            var chunk = self.chunkEnvelope
            let delta = key.field.releaseDelta(text, template: self.detailTemplates[key])
            chunk["choices"] = [["index": .number(Double(key.choice)), "delta": .object(delta), "finish_reason": nil]]
            return Self.madeChunk(chunk)
        }

        private mutating func noteEnvelope(_ object: [String: JSONValue]) {
            for key in ["id", "object", "created", "model", "system_fingerprint", "service_tier", "provider"] {
                if let value = object[key] { self.envelope[key] = value }
            }
        }

        /// The envelope for a chunk the stage makes: the latest upstream chunk's, or a plain one.
        private var chunkEnvelope: [String: JSONValue] {
            var envelope: [String: JSONValue] = [
                "id": "chatcmpl-moderation", "object": "chat.completion.chunk",
                "created": .number(Double(Int(Date().timeIntervalSince1970))), "model": .string(self.model),
            ]
            envelope.merge(self.envelope) { _, upstream in upstream }
            return envelope
        }

        private static func madeChunk(_ object: [String: JSONValue]) -> StreamEvent {
            var event = StreamEvent.data(.object(object), kind: .chunk)
            event.facts = ChunkFacts(object)
            return event
        }
    }
}
