//! Instance and per-schedule locks, as files in `.loop-orchestrator/locks/`.
//!
//! Locks are `flock`s taken through fd-lock, so the kernel releases them when a holder dies,
//! however it dies: a stale lock file never blocks anyone. The holder writes its pid into an
//! exclusive lock's file so that whoever is refused can say who holds it. Guards borrow the
//! [`LockFile`], so a lock lives exactly as long as the scope that took it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use fd_lock::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub const STATE_DIR: &str = ".loop-orchestrator";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is held by pid {pid}")]
    Held { what: String, pid: String },
    #[error("cannot open lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An open lock file. Take the lock with one of the `try_*` methods.
pub struct LockFile {
    lock: RwLock<File>,
    path: PathBuf,
    what: String,
}

impl LockFile {
    /// The lock serialising the cycles of one schedule, shared by `serve` and `run-cycle`.
    pub fn schedule(dir: &Path, schedule: &str) -> Result<LockFile, LockError> {
        LockFile::open(
            &locks_dir(dir).join(format!("schedule-{schedule}.lock")),
            format!("schedule {schedule:?}"),
        )
    }

    /// The lock of the one service allowed per instance directory.
    pub fn service(dir: &Path) -> Result<LockFile, LockError> {
        LockFile::open(
            &locks_dir(dir).join("service.lock"),
            "the service of this directory".into(),
        )
    }

    fn open(path: &Path, what: String) -> Result<LockFile, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        Ok(LockFile {
            lock: RwLock::new(file),
            path: path.to_path_buf(),
            what,
        })
    }

    /// Takes the lock exclusively without waiting and records this process's pid in it.
    pub fn try_exclusive(&mut self) -> Result<RwLockWriteGuard<'_, File>, LockError> {
        let path = self.path.clone();
        let what = self.what.clone();
        match self.lock.try_write() {
            Ok(mut guard) => {
                let file: &mut File = &mut guard;
                let recorded = file
                    .set_len(0)
                    .and_then(|()| file.rewind())
                    .and_then(|()| writeln!(file, "{}", std::process::id()));
                recorded.map_err(|source| LockError::Io { path, source })?;
                Ok(guard)
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(LockError::Held {
                what,
                pid: holder(&path),
            }),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// Takes the lock shared without waiting (cycles of an `overlap = "parallel"` schedule).
    pub fn try_shared(&mut self) -> Result<RwLockReadGuard<'_, File>, LockError> {
        let path = self.path.clone();
        let what = self.what.clone();
        match self.lock.try_read() {
            Ok(guard) => Ok(guard),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(LockError::Held {
                what,
                pid: holder(&path),
            }),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// Takes the lock for a cycle: shared for `overlap = "parallel"` schedules, else exclusive.
    pub fn try_cycle(&mut self, parallel: bool) -> Result<Held<'_>, LockError> {
        if parallel {
            self.try_shared().map(Held::Shared)
        } else {
            self.try_exclusive().map(Held::Exclusive)
        }
    }

    /// The pid of the holder, when the lock is held by anyone else; `None` when it is free.
    pub fn probe(&mut self) -> Option<String> {
        let path = self.path.clone();
        match self.lock.try_write() {
            Ok(_) => None,
            Err(_) => Some(holder(&path)),
        }
    }
}

/// A taken lock; released on drop.
pub enum Held<'a> {
    Exclusive(RwLockWriteGuard<'a, File>),
    Shared(RwLockReadGuard<'a, File>),
}

fn locks_dir(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("locks")
}

fn holder(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    match text.trim() {
        "" => "unknown".to_string(),
        pid => pid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = LockFile::schedule(dir.path(), "a").unwrap();
        let _guard = first.try_exclusive().unwrap();
        let mut second = LockFile::schedule(dir.path(), "a").unwrap();
        match second.try_exclusive() {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("lock taken twice"),
        }
        assert!(second.probe().is_some());
        let mut other = LockFile::schedule(dir.path(), "b").unwrap();
        assert!(
            other.try_exclusive().is_ok(),
            "locks of other schedules are independent"
        );
    }

    #[test]
    fn released_when_the_guard_drops() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = LockFile::service(dir.path()).unwrap();
        drop(first.try_exclusive().unwrap());
        let mut second = LockFile::service(dir.path()).unwrap();
        assert!(second.probe().is_none());
        assert!(second.try_exclusive().is_ok());
    }

    #[test]
    fn shared_holders_coexist_and_exclude_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = LockFile::schedule(dir.path(), "p").unwrap();
        let mut b = LockFile::schedule(dir.path(), "p").unwrap();
        let _ga = a.try_shared().unwrap();
        let _gb = b.try_shared().unwrap();
        let mut c = LockFile::schedule(dir.path(), "p").unwrap();
        assert!(c.try_exclusive().is_err());
    }
}
