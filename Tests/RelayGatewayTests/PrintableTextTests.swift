import Testing

@testable import RelayGateway

@Suite("Client text made safe for messages and logs")
struct PrintableTextTests {
    @Test("printable ASCII within the limit comes back as it is")
    func printableUnchanged() {
        #expect(HTTPRequestHandler.printable("grok-4-fast") == "grok-4-fast")
        #expect(HTTPRequestHandler.printable("abc", limit: 3) == "abc")
    }

    @Test("control characters and non-ASCII become '?', and long text is cut with an ellipsis")
    func unsafeReplacedAndCut() {
        #expect(HTTPRequestHandler.printable("a\nb\u{1B}[31mc") == "a?b?[31mc")
        #expect(HTTPRequestHandler.printable("Olá") == "Ol?")
        #expect(HTTPRequestHandler.printable("abcdef", limit: 3) == "abc…")
    }
}
