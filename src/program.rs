//! Finding the program of an argv: the one resolver for modes and `on_escalate`.
//!
//! Rule: `argv[0]` is looked up on `PATH` (relative to the working directory the child will
//! have, for a relative `PATH` entry or a `./tool`); a program named `loop-orchestrator` that is
//! not on `PATH` is this very binary, so modes and escalation hooks can call its subcommands
//! from a fresh clone where it is not installed.

use std::path::{Path, PathBuf};

/// The name under which an argv means this binary when it is not installed.
pub const SELF_NAME: &str = "loop-orchestrator";

/// The path of `program` as a child started in `cwd` would run it; `None` when not found.
pub fn resolve(program: &str, cwd: &Path) -> Option<PathBuf> {
    which::which_in(program, std::env::var_os("PATH"), cwd)
        .ok()
        .or_else(|| {
            (program == SELF_NAME)
                .then(|| std::env::current_exe().ok())
                .flatten()
        })
}

/// `argv` with its program resolved (see [`resolve`]); `None` when the program is not found or
/// argv is empty.
pub fn resolve_argv(argv: &[String], cwd: &Path) -> Option<Vec<String>> {
    let found = resolve(argv.first()?, cwd)?;
    let mut resolved = argv.to_vec();
    resolved[0] = found.display().to_string();
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_binary_stands_in_for_loop_orchestrator_off_path() {
        let cwd = std::env::temp_dir();
        let argv = vec![SELF_NAME.to_string(), "status".to_string()];
        let resolved = resolve_argv(&argv, &cwd).expect("resolved");
        let found = which::which_in(SELF_NAME, std::env::var_os("PATH"), &cwd).ok();
        let expected = found.unwrap_or_else(|| std::env::current_exe().unwrap());
        assert_eq!(resolved[0], expected.display().to_string());
        assert_eq!(resolved[1], "status");
        assert!(resolve("no-such-program-anywhere", &cwd).is_none());
        assert!(resolve_argv(&[], &cwd).is_none());
    }

    #[test]
    fn programs_are_found_on_path() {
        let resolved = resolve("sh", Path::new("/")).expect("sh is on PATH");
        assert!(resolved.is_absolute());
    }
}
