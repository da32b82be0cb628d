//! Exit codes (SPEC §7) and the one error type commands return.
//!
//! Rule: commands return `Result<Code, Error>`; only `main` turns them into a process exit,
//! printing the error once. [`Error::exit_code`] is the one mapping from errors to codes:
//! 1 a run failed or the system refused (I/O), 2 invalid input, 75 busy (EX_TEMPFAIL: the
//! schedule's cycle runs elsewhere), 130 interrupted by a signal.

use std::fmt;

use crate::problem::Problem;

/// A process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    pub const OK: Code = Code(0);
    pub const FAILED: Code = Code(1);
    pub const INVALID: Code = Code(2);
    pub const BUSY: Code = Code(75);
    pub const INTERRUPTED: Code = Code(130);
}

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        std::process::ExitCode::from(code.0)
    }
}

/// Why a command did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Files that do not validate, each problem with file:line:column.
    #[error("{}", Problems(.0))]
    Problems(Vec<Problem>),
    /// An argument or a file that cannot be used; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// A schedule's cycle runs in another process (or task).
    #[error("{schedule}: a cycle of this schedule is already running (pid {pid})")]
    Busy { schedule: String, pid: String },
    /// A signal (or a client's cancellation) stopped the command.
    #[error("interrupted")]
    Interrupted,
    /// The system refused (a file cannot be written, a runtime cannot start).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> Code {
        match self {
            Error::Problems(_) | Error::Invalid(_) => Code::INVALID,
            Error::Busy { .. } => Code::BUSY,
            Error::Interrupted => Code::INTERRUPTED,
            Error::Failed(_) => Code::FAILED,
        }
    }

    pub fn failed(err: impl fmt::Display) -> Error {
        Error::Failed(err.to_string())
    }
}

impl From<crate::problem::Problems> for Error {
    fn from(problems: crate::problem::Problems) -> Error {
        Error::Problems(problems.0)
    }
}

/// Problems as `validate` prints them: one per line, then how many.
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            writeln!(f, "{p}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_code() {
        let problem = Problem {
            file: "schedules.json".into(),
            line: 3,
            column: 7,
            message: "bad".into(),
        };
        let problems = Error::Problems(vec![problem]);
        assert_eq!(problems.exit_code(), Code::INVALID);
        assert_eq!(
            problems.to_string(),
            "schedules.json:3:7: bad\n1 problem found"
        );
        assert_eq!(Error::Invalid("x".into()).exit_code(), Code(2));
        let busy = Error::Busy {
            schedule: "s".into(),
            pid: "42".into(),
        };
        assert_eq!(busy.exit_code(), Code(75));
        assert!(busy.to_string().contains("pid 42"));
        assert_eq!(Error::Interrupted.exit_code(), Code(130));
        assert_eq!(Error::Failed("disk".into()).exit_code(), Code(1));
    }
}
