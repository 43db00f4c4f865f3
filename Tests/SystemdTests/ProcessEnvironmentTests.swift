import Testing

/// Parent of every suite that changes the process environment, spawns processes or moves
/// file descriptors. `.serialized` applies to nested suites too, so none of them run at the
/// same time (setenv is not safe while another thread reads the environment, and fd 3 is
/// process-wide). Suites that touch none of that live outside and run in parallel.
@Suite(.serialized)
enum ProcessEnvironmentTests {}
