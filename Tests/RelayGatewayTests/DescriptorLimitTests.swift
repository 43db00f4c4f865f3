import Testing

@testable import RelayGateway

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

@Suite("Descriptor limit")
struct DescriptorLimitTests {
    @Test("Two descriptors per stream after the reserve: a hard limit of 20,000 admits 9,872 streams, 1,024 admits 384")
    func clientConnections() {
        #expect(DescriptorLimit.clientConnections(allowedBy: 20_000) == 9_872)
        #expect(DescriptorLimit.clientConnections(allowedBy: 1_024) == 384)
        #expect(DescriptorLimit.clientConnections(allowedBy: 100) == 1, "never none")
    }

    @Test("The soft limit is raised to the hard one, and reported")
    func raisesSoftLimit() throws {
        // (Not lowered first: tests running alongside may need their descriptors.)
        let inForce = DescriptorLimit.raiseSoftLimit()
        var after = rlimit()
        try #require(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &after) == 0)
        #expect(after.rlim_cur == after.rlim_max)
        if after.rlim_max < rlim_t(Int.max) { #expect(inForce == Int(after.rlim_max)) }
    }
}
