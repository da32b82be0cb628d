//! How a child's output reaches its readers: one call per line, as the lines arrive.
//!
//! These two types belong to the protocol shared by the runner and every reader of child
//! output; they live here until they move to that shared module.

/// Which of the child's pipes a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a child's output line by line.
pub trait LineSink: Send {
    /// One line, without its line ending, decoded lossily as UTF-8. A line longer than the
    /// runner's line limit arrives cut to that limit with `cut = true`.
    fn line(&mut self, stream: Stream, line: &str, cut: bool);
}
