/// Random event streams from a small grammar, and a plain reading of them to check the
/// decoder against.
enum EventStreamGrammar {
    static let values = ["", "x", "hello world", "{\"a\":1}", "Olá, você", " leading space", "a:b:c", "[DONE]", "😀€"]
    static let lineEnds = ["\n", "\r", "\r\n"]

    /// A random stream: field lines, comments, unknown fields and blank lines, each ended by
    /// LF, CR or CR LF; sometimes a byte order mark first, sometimes an unfinished last line.
    static func randomStream(using rng: inout some RandomNumberGenerator) -> [UInt8] {
        var text = Int.random(in: 0..<10, using: &rng) == 0 ? "\u{FEFF}" : ""
        for _ in 0..<Int.random(in: 0...25, using: &rng) {
            let value = self.values.randomElement(using: &rng)!
            let line =
                switch Int.random(in: 0..<18, using: &rng) {
                case 0, 1, 2: "data: \(value)"
                case 3: "data:\(value)"
                case 4: "data"
                case 5: "event: \(value)"
                case 6: "id: \(value)"
                case 7: "retry: \(Int.random(in: 0...100_000, using: &rng))"
                case 8: "retry: soon"
                case 9: ": \(value)"
                case 10: ":"
                case 11: "x-vendor: \(value)"
                case 12: "nocolon"
                default: ""  // a blank line: ends the block
                }
            text += line + self.lineEnds.randomElement(using: &rng)!
        }
        if Bool.random(using: &rng) { text += self.lineEnds.randomElement(using: &rng)! }
        if Int.random(in: 0..<4, using: &rng) == 0 { text += "data: unfinished" }
        return Array(text.utf8)
    }

    /// An event as the rules of the event-stream format read it.
    struct Event: Equatable, CustomStringConvertible {
        var data: String?
        var eventType: String?
        var id: String?
        var retry: Int?
        var hasComment = false

        init(data: String? = nil, eventType: String? = nil, id: String? = nil, retry: Int? = nil, hasComment: Bool = false) {
            self.data = data
            self.eventType = eventType
            self.id = id
            self.retry = retry
            self.hasComment = hasComment
        }

        init(_ frame: FrameSnapshot) {
            self.init(data: frame.data, eventType: frame.eventType, id: frame.id, retry: frame.retry, hasComment: frame.hasComment)
        }

        var isEmpty: Bool { self.data == nil && self.eventType == nil && self.id == nil && self.retry == nil && !self.hasComment }

        var description: String { "\(self.data.debugDescription)/\(self.eventType ?? "-")/\(self.id ?? "-")/\(self.retry.map(String.init) ?? "-")\(self.hasComment ? "/comment" : "")" }
    }

    /// Reads a whole stream line by line, the way the spec describes it: split into lines on
    /// CR LF, CR or LF; blank lines end a block; a block with nothing in it is dropped; at the
    /// end of input an unfinished block is delivered (the decoder's documented choice).
    static func reference(_ input: [UInt8]) -> [Event] {
        var bytes = input[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        var lines: [String] = []
        var lineStart = bytes.startIndex
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == 0x0A || byte == 0x0D {
                lines.append(String(decoding: bytes[lineStart..<index], as: UTF8.self))
                if byte == 0x0D, index + 1 < bytes.endIndex, bytes[index + 1] == 0x0A { index += 1 }
                lineStart = index + 1
            }
            index += 1
        }
        if lineStart < bytes.endIndex { lines.append(String(decoding: bytes[lineStart...], as: UTF8.self)) }

        var events: [Event] = []
        var current = Event()
        var dataLines: [String] = []
        func dispatch() {
            if !dataLines.isEmpty { current.data = dataLines.joined(separator: "\n") }
            if !current.isEmpty { events.append(current) }
            current = Event()
            dataLines = []
        }
        for line in lines {
            if line.isEmpty {
                dispatch()
                continue
            }
            if line.hasPrefix(":") {
                current.hasComment = true
                continue
            }
            let name: Substring
            var value: Substring
            if let colon = line.firstIndex(of: ":") {
                name = line[..<colon]
                value = line[line.index(after: colon)...]
                if value.hasPrefix(" ") { value = value.dropFirst() }
            } else {
                name = line[...]
                value = ""
            }
            switch name {
            case "data": dataLines.append(String(value))
            case "event": current.eventType = String(value)
            case "id": current.id = String(value)
            case "retry":
                if !value.isEmpty, value.allSatisfy(\.isASCII), value.allSatisfy(\.isNumber) { current.retry = Int(value) }
            default: break
            }
        }
        dispatch()
        return events
    }
}
