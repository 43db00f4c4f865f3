/// The text of one stream channel (a choice's content, its reasoning, one tool call's
/// arguments) that has come from upstream but not gone to the client yet, with what the
/// checks know about it.
///
/// Offsets are in Unicode scalars and relative to the first held scalar; releasing a prefix
/// shifts them all. The invariants after every update: `approved <= cleared <= scalars.count`,
/// and `scalars.count <= holdBack` once the approved prefix has been released.
struct HeldText: Sendable {
    /// How much released text is kept in front of the held text for regular expressions
    /// that look behind (`\b`, `(?<=...)`).
    static let contextLimit = 32

    private(set) var scalars: [Unicode.Scalar] = []
    /// Released text just before `scalars`, at most ``contextLimit`` scalars.
    private(set) var context: [Unicode.Scalar] = []
    /// Per pattern rule: matches of that rule start at or after this offset (a flagged match
    /// is not reported twice).
    var ruleCursors: [Int]
    /// No rule looks before this offset: the text before it was replaced by a mask.
    private(set) var floor = 0
    /// The prefix the pattern rules have cleared.
    var cleared = 0
    /// The prefix the external hooks have approved (equal to `cleared` without hooks).
    var approved = 0

    init(ruleCount: Int) {
        self.ruleCursors = Array(repeating: 0, count: ruleCount)
    }

    var isEmpty: Bool { self.scalars.isEmpty }

    mutating func append(_ text: some Sequence<Unicode.Scalar>) {
        self.scalars.append(contentsOf: text)
    }

    /// The held text in `range` as a string.
    func text(_ range: Range<Int>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: self.scalars[range])
        return String(view)
    }

    /// Replaces `range` with `replacement` (a redaction): nothing before the replacement's end
    /// is looked at again, and later offsets move with the text.
    mutating func replace(_ range: Range<Int>, with replacement: [Unicode.Scalar]) {
        let delta = replacement.count - range.count
        let end = range.lowerBound + replacement.count
        func moved(_ offset: Int) -> Int { offset >= range.upperBound ? offset + delta : max(offset, end) }
        self.scalars.replaceSubrange(range, with: replacement)
        for index in self.ruleCursors.indices { self.ruleCursors[index] = moved(self.ruleCursors[index]) }
        self.floor = moved(self.floor)
        self.cleared = self.cleared >= range.upperBound ? self.cleared + delta : self.cleared
        self.approved = self.approved >= range.upperBound ? self.approved + delta : self.approved
    }

    /// Removes the approved prefix and returns it: the text that may go to the client now.
    mutating func releaseApproved() -> String {
        let count = self.approved
        guard count > 0 else { return "" }
        let released = self.text(0..<count)
        self.context.append(contentsOf: self.scalars[0..<count])
        if self.context.count > Self.contextLimit { self.context.removeFirst(self.context.count - Self.contextLimit) }
        self.scalars.removeFirst(count)
        for index in self.ruleCursors.indices { self.ruleCursors[index] = max(0, self.ruleCursors[index] - count) }
        self.floor = max(0, self.floor - count)
        self.cleared = max(0, self.cleared - count)
        self.approved = 0
        return released
    }

    /// Drops everything held (the stream failed or was blocked).
    mutating func discard() {
        self.scalars.removeAll()
        for index in self.ruleCursors.indices { self.ruleCursors[index] = 0 }
        self.floor = 0
        self.cleared = 0
        self.approved = 0
    }
}
