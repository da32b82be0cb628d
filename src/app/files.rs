//! The instance's files as text, for a client that reads them (the MCP resources): the three
//! files people edit, and the log of one mode run.
//!
//! Rule: a run log is named by two names, a run folder and a log file, never by a path. Each
//! name is checked on its own (the characters run and mode names are made of; nothing that
//! starts with a dot, no separator), then neither the run folder nor the log may be a symlink,
//! and the log is opened with `O_NOFOLLOW` and must be a regular file inside the runs folder.
//! So `../../etc/passwd`, absolute paths, encoded separators and symlinks planted in the runs
//! folder are all refused.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::exit::Error;
use crate::instance::{self, Instance};

/// The most of a log returned; the runner caps logs at [`crate::runner::LOG_CAP`] plus a
/// marker, so only a file written by something else is cut.
pub const MAX_LOG_BYTES: u64 = 2 * crate::runner::LOG_CAP;

/// A file of the instance that clients may read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceFile {
    Schedules,
    Todo,
    Memory,
}

impl InstanceFile {
    pub const ALL: [InstanceFile; 3] = [
        InstanceFile::Schedules,
        InstanceFile::Todo,
        InstanceFile::Memory,
    ];

    /// The file's name in the instance directory.
    pub fn name(self) -> &'static str {
        match self {
            InstanceFile::Schedules => instance::SCHEDULES,
            InstanceFile::Todo => instance::TODO,
            InstanceFile::Memory => instance::MEMORY,
        }
    }

    pub fn path(self, inst: &Instance) -> std::path::PathBuf {
        match self {
            InstanceFile::Schedules => inst.schedules(),
            InstanceFile::Todo => inst.todo(),
            InstanceFile::Memory => inst.memory(),
        }
    }
}

/// The text of one of the instance's files.
pub fn read(inst: &Instance, file: InstanceFile) -> Result<String, Error> {
    let path = file.path(inst);
    match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            Error::Invalid(format!(
                "{} is not valid UTF-8 (see `loop-orchestrator validate`)",
                file.name()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(Error::Invalid(format!(
            "{} does not exist in {}",
            file.name(),
            inst.root().display()
        ))),
        Err(err) => Err(Error::Failed(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// A run log's text, and whether it was cut at [`MAX_LOG_BYTES`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunLog {
    pub run: String,
    pub file: String,
    pub text: String,
    pub cut: bool,
}

/// The log `<log>.log` of run folder `run` (a cycle id, or an `on_escalate` run).
pub fn run_log(inst: &Instance, run: &str, log: &str) -> Result<RunLog, Error> {
    check_name("run", run)?;
    check_name("log", log)?;
    let file_name = format!("{log}.log");
    let refused = |why: &str| Error::Invalid(format!("runs/{run}/{file_name}: {why}"));
    let runs = inst.runs_dir();
    let run_dir = runs.join(run);
    match std::fs::symlink_metadata(&run_dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(refused("the run folder is a symlink; refused"));
        }
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(refused("not a run folder")),
        Err(_) => return Err(refused("no such run (see `timing_rows` for cycle ids)")),
    }
    let path = run_dir.join(&file_name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => refused("the log is a symlink; refused"),
            _ if err.kind() == std::io::ErrorKind::NotFound => refused("no such log in this run"),
            _ => Error::Failed(format!("cannot read {}: {err}", path.display())),
        })?;
    let meta = file.metadata().map_err(Error::failed)?;
    if !meta.is_file() {
        return Err(refused("not a regular file"));
    }
    // The runs folder itself (or a parent) may be a symlink the instance's owner set up on
    // purpose; what must hold is that the log is inside it.
    if !inside(&runs, &path) {
        return Err(refused("outside the runs folder; refused"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LOG_BYTES)
        .read_to_end(&mut bytes)
        .map_err(Error::failed)?;
    Ok(RunLog {
        run: run.to_string(),
        file: file_name,
        cut: meta.len() > MAX_LOG_BYTES,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// A run or log name: made of the characters run folders and mode slugs use, not starting
/// with a dot.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "bad {what} name {name:?}: expected a name such as 20261121T100003.123Z-main-loop \
             (letters, digits, '-', '_', '.', '~'; no '/', not starting with '.')"
        )))
    }
}

fn inside(dir: &Path, path: &Path) -> bool {
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => path.starts_with(dir),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_runs_folder_are_refused() {
        for bad in [
            "", ".", "..", "../x", "a/b", "/etc", ".hidden", "a\0b", "%2e%2e", "a b", "..%2F",
        ] {
            assert!(check_name("run", bad).is_err(), "{bad:?}");
        }
        for good in [
            "20261121T100003.123Z-main-loop",
            "implementation.attempt2",
            "x~escalate",
        ] {
            assert!(check_name("run", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_log_is_read_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let run = inst.run_dir("r1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("m.log"), "out\n").unwrap();
        let log = run_log(&inst, "r1", "m").unwrap();
        assert_eq!((log.text.as_str(), log.cut), ("out\n", false));

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "no").unwrap();
        std::os::unix::fs::symlink(&secret, run.join("link.log")).unwrap();
        let err = run_log(&inst, "r1", "link").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        std::os::unix::fs::symlink(dir.path(), inst.run_dir("r2")).unwrap();
        let err = run_log(&inst, "r2", "secret").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        let err = run_log(&inst, "r1", "absent").unwrap_err();
        assert!(err.to_string().contains("no such log"), "{err}");
        let err = run_log(&inst, "r9", "m").unwrap_err();
        assert!(err.to_string().contains("no such run"), "{err}");
    }
}
