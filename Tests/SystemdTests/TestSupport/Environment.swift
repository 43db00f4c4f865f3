#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Sets (or, for `nil`, removes) variables until `restore()`, which puts back what was there.
/// Only for suites nested in `ProcessEnvironmentTests`. Used with `defer` rather than a
/// closure so `#expect(try …)` inside a test is not swallowed by closure type inference.
struct EnvironmentOverride {
    private let saved: [String: String?]

    init(_ values: [String: String?]) {
        var saved: [String: String?] = [:]
        for (name, value) in values {
            saved[name] = getenv(name).map { String(cString: $0) }
            Self.set(name, value)
        }
        self.saved = saved
    }

    func restore() {
        for (name, value) in self.saved {
            Self.set(name, value)
        }
    }

    private static func set(_ name: String, _ value: String?) {
        if let value {
            setenv(name, value, 1)
        } else {
            unsetenv(name)
        }
    }
}
