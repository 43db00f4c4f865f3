import Foundation
import RelayCore

/// The records of a usage ledger file (`server.usage_ledger`, one JSON object a line), in order.
func ledgerRecords(_ path: String) throws -> [JSONValue] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
}
