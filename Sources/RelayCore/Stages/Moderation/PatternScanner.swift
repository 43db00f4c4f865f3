import Foundation

/// Runs pattern rules over held text that grows chunk by chunk, and says how much of it
/// is clear to go on.
///
/// Each scan looks for two things per rule: the leftmost complete match, and the earliest
/// position where a match may still be completing because the text ends inside it (for a
/// literal, a suffix that begins the phrase; for a regular expression, a position where
/// ICU's matcher touched the end of the text). Complete matches are acted on leftmost
/// first, but only when they start before every such partial match, so that a longer rule
/// still forming around a shorter one wins (`bad` flagged, `bad word` blocked). The text
/// before the earliest partial match is cleared; the text after it is held, but never more
/// than `holdBack` scalars: a match longer than that may slip through when it is split.
/// At the end of a channel (`final`) nothing can grow any more and everything is cleared.
struct PatternScanner: Sendable {
    let rules: [PatternRule]
    let holdBack: Int
    let mask: String
    private let folds: Bool

    init(rules: [PatternRule], holdBack: Int, mask: String) {
        self.rules = rules
        self.holdBack = holdBack
        self.mask = mask
        self.folds = rules.contains { !$0.caseSensitive }
    }

    /// A complete match a scan acted on.
    struct Match {
        var rule: PatternRule
        /// The matched text, before any redaction.
        var text: String
    }

    /// Scans `held` after new text was appended: redacts in place, reports every match it
    /// acts on, and sets `held.cleared`. Returns the match of a blocking rule, if one matched.
    func scan(_ held: inout HeldText, final: Bool, report: (Match) -> Void) -> Match? {
        while true {
            let count = held.scalars.count
            let folded = self.folds ? held.scalars.map(CaseFolding.fold) : []
            var regexView: RegexTextView?
            var earliestPartial = Int.max
            var best: (rule: Int, range: Range<Int>)?
            for (index, rule) in self.rules.enumerated() {
                let from = max(held.ruleCursors[index], held.floor)
                guard from < count else { continue }
                let found: (match: Range<Int>?, partial: Int?)
                switch rule.matcher {
                case .literal(let needle):
                    found = Self.findLiteral(needle, in: rule.caseSensitive ? held.scalars : folded, from: from, final: final)
                case .regex(let box):
                    let view = regexView ?? RegexTextView(context: held.context, scalars: held.scalars)
                    regexView = view
                    found = view.find(box.regex, from: from, tailStart: max(from, count - self.holdBack), final: final)
                }
                if let partial = found.partial { earliestPartial = min(earliestPartial, partial) }
                if let match = found.match {
                    if let current = best {
                        if match.lowerBound < current.range.lowerBound
                            || (match.lowerBound == current.range.lowerBound && match.count > current.range.count)
                        {
                            best = (index, match)
                        }
                    } else {
                        best = (index, match)
                    }
                }
            }
            if let best, best.range.lowerBound < earliestPartial {
                let rule = self.rules[best.rule]
                let match = Match(rule: rule, text: held.text(best.range))
                report(match)
                switch rule.action {
                case .block:
                    return match
                case .redact:
                    held.replace(best.range, with: Array((rule.replacement ?? self.mask).unicodeScalars))
                case .flag, .pass:
                    held.ruleCursors[best.rule] = best.range.upperBound
                }
                continue
            }
            let cleared = final ? count : min(earliestPartial, count)
            held.cleared = max(cleared, count - self.holdBack, held.approved)
            return nil
        }
    }

    /// The leftmost occurrence of `needle` at or after `from`, and (unless `final`) the
    /// earliest suffix of `text` that is a proper beginning of it.
    static func findLiteral(_ needle: [Unicode.Scalar], in text: [Unicode.Scalar], from: Int, final: Bool) -> (match: Range<Int>?, partial: Int?) {
        var match: Range<Int>?
        let first = needle[0]
        var start = from
        while start + needle.count <= text.count {
            if text[start] == first, text[start..<(start + needle.count)].elementsEqual(needle) {
                match = start..<(start + needle.count)
                break
            }
            start += 1
        }
        guard !final else { return (match, nil) }
        var partial: Int?
        var position = max(from, text.count - needle.count + 1)
        while position < text.count {
            if text[position] == first, text[position...].elementsEqual(needle[0..<(text.count - position)]) {
                partial = position
                break
            }
            position += 1
        }
        return (match, partial)
    }
}

/// Held text (with the released context in front of it) as `NSRegularExpression` sees it:
/// UTF-16, with a map back to scalar offsets.
struct RegexTextView {
    let string: String
    /// The UTF-16 offset of each scalar (context first), and the total at the end.
    private let utf16Offsets: [Int]
    private let contextCount: Int
    private let count: Int

    init(context: [Unicode.Scalar], scalars: [Unicode.Scalar]) {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: context)
        view.append(contentsOf: scalars)
        self.string = String(view)
        var offsets: [Int] = []
        offsets.reserveCapacity(context.count + scalars.count + 1)
        var offset = 0
        for scalar in view {
            offsets.append(offset)
            offset += scalar.utf16.count
        }
        offsets.append(offset)
        self.utf16Offsets = offsets
        self.contextCount = context.count
        self.count = scalars.count
    }

    private func utf16(_ scalarOffset: Int) -> Int { self.utf16Offsets[self.contextCount + scalarOffset] }

    /// The held-text scalar offset of a UTF-16 offset (rounded down to a scalar start).
    private func scalarOffset(utf16 offset: Int) -> Int {
        var low = 0
        var high = self.utf16Offsets.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if self.utf16Offsets[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return low - self.contextCount
    }

    private var end: Int { self.utf16Offsets[self.utf16Offsets.count - 1] }

    /// The leftmost non-empty match starting at or after `from`, and (unless `final`) the
    /// earliest position from `tailStart` on where a match may still be forming.
    func find(_ regex: NSRegularExpression, from: Int, tailStart: Int, final: Bool) -> (match: Range<Int>?, partial: Int?) {
        var match: Range<Int>?
        var searchFrom = from
        while searchFrom < self.count {
            let start = self.utf16(searchFrom)
            guard let found = regex.firstMatch(in: self.string, options: [.withTransparentBounds], range: NSRange(location: start, length: self.end - start))
            else { break }
            let lower = self.scalarOffset(utf16: found.range.location)
            let upper = self.scalarOffset(utf16: found.range.location + found.range.length)
            if upper > lower {
                match = lower..<upper
                break
            }
            searchFrom = lower + 1
        }
        guard !final else { return (match, nil) }
        let limit = match?.lowerBound ?? self.count
        var position = tailStart
        while position < limit {
            if self.touchesEnd(regex, at: position) { return (match, position) }
            position += 1
        }
        // A match that reached the end of the text may still grow (`\d+`, a `\b` after it).
        if let match, self.touchesEnd(regex, at: match.lowerBound) { return (match, match.lowerBound) }
        return (match, nil)
    }

    /// Whether a match attempt anchored at `position` needed to look past the end of the text.
    private func touchesEnd(_ regex: NSRegularExpression, at position: Int) -> Bool {
        let start = self.utf16(position)
        var hitEnd = false
        regex.enumerateMatches(
            in: self.string, options: [.anchored, .withTransparentBounds, .reportCompletion],
            range: NSRange(location: start, length: self.end - start)
        ) { _, flags, stop in
            // Only the first attempt counts: later ones start after a match, elsewhere.
            hitEnd = flags.contains(.hitEnd)
            stop.pointee = true
        }
        return hitEnd
    }
}
