/// Where a stream's own tasks run.
///
/// The gateway runs a request on its client connection's event loop when that loop serves
/// no other request (``StreamTasks/executor`` is then a task executor for the loop), so
/// that an event goes from the upstream's socket to the client's without waking another
/// thread. A task started with
/// `Task { }` does not inherit a task's executor preference; stages that start one (the
/// keepalive pump) start it with ``start(_:)`` so that it runs there too. With no
/// preference set (unit tests, or a caller outside the gateway) tasks run on Swift's
/// global executor, as before.
public enum StreamTasks {
    /// The executor the current stream's tasks prefer, if any.
    @TaskLocal public static var executor: (any TaskExecutor)?

    /// Starts an unstructured task on the current stream's executor.
    @discardableResult
    public static func start<Success: Sendable>(_ operation: sending @escaping @isolated(any) () async throws -> Success) -> Task<Success, any Error> {
        // Not `Task(executorPreference: nil)`: a task made that way still takes a lock to
        // look its preference up every time it switches executors.
        guard let executor = self.executor else { return Task(operation: operation) }
        return Task(executorPreference: executor, operation: operation)
    }

    /// Starts an unstructured task that cannot fail on the current stream's executor.
    @discardableResult
    public static func start<Success: Sendable>(_ operation: sending @escaping @isolated(any) () async -> Success) -> Task<Success, Never> {
        guard let executor = self.executor else { return Task(operation: operation) }
        return Task(executorPreference: executor, operation: operation)
    }

    /// Runs `operation` in a child task (same executor, same cancellation) and returns its
    /// result.
    ///
    /// A task keeps the memory of its deepest chain of async frames until it ends: its
    /// allocator reuses its slabs but never frees them. A stream's tasks live as long as the
    /// stream, so a deep phase that ends early (the upstream request through the stages and
    /// the upstream client, about 20 KB of frames) runs in a child, whose slabs go when it ends,
    /// instead of staying with each of 10,000 slow streams for their whole length.
    public static func inChildTask<Success: Sendable>(_ operation: sending @escaping () async throws -> Success) async throws -> Success {
        async let result = operation()
        return try await result
    }
}
