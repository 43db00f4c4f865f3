import Foundation
import RelayCore

/// A duration written in the config as `500ms`, `15s`, `5m`, `1h` (or a bare number of seconds).
public struct ConfigDuration: Sendable, Equatable, Codable, CustomStringConvertible {
    public var duration: Duration

    public init(_ duration: Duration) { self.duration = duration }

    public init(parsing text: String) throws(ConfigError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            if let value = Double(number), !(suffix == "m" && number.hasSuffix("m")), let duration = Duration.parsed(seconds: value * scale) {
                self.duration = duration
                return
            }
        }
        if let seconds = Double(trimmed), let duration = Duration.parsed(seconds: seconds) {
            self.duration = duration
            return
        }
        throw ConfigError("'\(text)' is not a duration (write it like 500ms, 15s, 5m or 1h; less than 10⁹ s)")
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self) {
            guard seconds >= 0 else { throw configFailure(decoder, "a duration cannot be negative") }
            guard let duration = Duration.parsed(seconds: seconds) else {
                throw configFailure(decoder, "\(seconds) s is not a duration (less than 10⁹ s)")
            }
            self.duration = duration
        } else {
            let text = try container.decode(String.self)
            do {
                self = try Self(parsing: text)
            } catch {
                throw configFailure(decoder, error.description)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }

    public var description: String {
        let ms = self.duration.components.seconds * 1000 + self.duration.components.attoseconds / 1_000_000_000_000_000
        if ms % 3_600_000 == 0, ms > 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0, ms > 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }

    /// The duration in seconds as a floating-point number.
    public var seconds: Double {
        Double(self.duration.components.seconds) + Double(self.duration.components.attoseconds) / 1e18
    }
}

/// A size written as `8MiB`, `512KiB`, `1GiB`, `1000` (bytes).
public struct ConfigByteSize: Sendable, Equatable, Codable, CustomStringConvertible {
    public var bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public init(parsing text: String) throws(ConfigError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000), ("B", 1)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            // Int(exactly:) refuses what does not fit (the fuzzer's 1e300MiB) instead of trapping.
            if let value = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), value >= 0,
                let bytes = Int(exactly: (value * Double(scale)).rounded(.down))
            {
                self.bytes = bytes
                return
            }
        }
        if let value = Int(trimmed), value >= 0 {
            self.bytes = value
            return
        }
        throw ConfigError("'\(text)' is not a size (write it like 8MiB, 512KiB or a number of bytes)")
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int.self) {
            guard value >= 0 else { throw configFailure(decoder, "a size cannot be negative") }
            self.bytes = value
        } else {
            let text = try container.decode(String.self)
            do {
                self = try Self(parsing: text)
            } catch {
                throw configFailure(decoder, error.description)
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }

    public var description: String {
        if self.bytes >= 1 << 20, self.bytes % (1 << 20) == 0 { return "\(self.bytes >> 20)MiB" }
        if self.bytes >= 1 << 10, self.bytes % (1 << 10) == 0 { return "\(self.bytes >> 10)KiB" }
        return "\(self.bytes)"
    }
}

/// A Unix file mode written in octal, `"0660"` (quote it: YAML reads a bare 0660 as a number).
public struct ConfigFileMode: Sendable, Equatable, Codable, CustomStringConvertible {
    public var mode: UInt16

    public init(_ mode: UInt16) { self.mode = mode }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        // As written first: YAML reads a bare 0660 as the octal number 432, but the text is "0660".
        let text: String
        if let written = try? container.decode(String.self) {
            text = written
        } else {
            text = String(try container.decode(Int.self))
        }
        guard let mode = UInt16(text.hasPrefix("0o") ? String(text.dropFirst(2)) : text, radix: 8), mode <= 0o777 else {
            throw configFailure(decoder, "'\(text)' is not an octal file mode like \"0660\"")
        }
        self.mode = mode
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }

    public var description: String {
        let octal = String(self.mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - octal.count)) + octal
    }
}

/// A configuration file is wrong; the message says where and why.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
