//! The service lock and the per-schedule locks, as files in `.loop-orchestrator/locks/`.
//!
//! Rules:
//! - Locks are open-file-description locks (`fcntl` `F_OFD_SETLK`): the kernel releases them
//!   when the holder's file is closed, however the holder dies, so a stale lock file never
//!   blocks anyone; and, unlike `flock`, a lock can be *tested* without being taken
//!   (`F_OFD_GETLK`). [`LockFile::probe`] only tests: `status`, a todo run looking for a
//!   service, and pollers (MCP, metrics) never hold a schedule's lock, not even for a moment,
//!   so they can never make a fire of that schedule find it busy.
//! - The holder of an exclusive lock writes its pid into the file, so whoever is refused (or
//!   probes) can say who holds it.
//! - Guards borrow the [`LockFile`], so a lock lives exactly as long as the scope that took it.
//!
//! Written on `nix`'s `fcntl` rather than a locking crate: the crates at hand (fd-lock, fs4)
//! wrap `flock`, which has no way to test a lock without taking it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, fcntl};

use crate::instance::Instance;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} is held by pid {pid}")]
    Held { what: String, pid: String },
    #[error("cannot open lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// An open lock file. Take the lock with one of the `try_*` methods.
pub struct LockFile {
    file: File,
    path: PathBuf,
    what: String,
}

/// A taken lock; released on drop.
pub struct Held<'a> {
    lock: &'a LockFile,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; unlocking now lets the LockFile be reused.
        let _ = set_lock(&self.lock.file, libc::F_UNLCK);
    }
}

impl LockFile {
    /// The lock serialising the cycles of one schedule, shared by `serve` and `run-cycle`.
    pub fn schedule(inst: &Instance, schedule: &str) -> Result<LockFile, LockError> {
        LockFile::open(
            &inst.schedule_lock(schedule),
            format!("schedule {schedule:?}"),
        )
    }

    /// The lock of the one service allowed per instance directory.
    pub fn service(inst: &Instance) -> Result<LockFile, LockError> {
        LockFile::open(&inst.service_lock(), "the service of this directory".into())
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
            file,
            path: path.to_path_buf(),
            what,
        })
    }

    /// Takes the lock exclusively without waiting and records this process's pid in it.
    pub fn try_exclusive(&mut self) -> Result<Held<'_>, LockError> {
        self.take(libc::F_WRLCK)?;
        let held = Held { lock: self };
        let mut file = &held.lock.file;
        let recorded = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        recorded.map_err(|source| LockError::Io {
            path: held.lock.path.clone(),
            source,
        })?;
        Ok(held)
    }

    /// Takes the lock shared without waiting (cycles of an `overlap = "parallel"` schedule).
    pub fn try_shared(&mut self) -> Result<Held<'_>, LockError> {
        self.take(libc::F_RDLCK)?;
        Ok(Held { lock: self })
    }

    /// Takes the lock for a cycle: shared for `overlap = "parallel"` schedules, else exclusive.
    pub fn try_cycle(&mut self, parallel: bool) -> Result<Held<'_>, LockError> {
        if parallel {
            self.try_shared()
        } else {
            self.try_exclusive()
        }
    }

    fn take(&self, kind: libc::c_int) -> Result<(), LockError> {
        match set_lock(&self.file, kind) {
            Ok(()) => Ok(()),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                Err(LockError::Held {
                    what: self.what.clone(),
                    pid: holder(&self.path),
                })
            }
            Err(source) => Err(LockError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The pid of the holder when anyone holds the lock (shared or exclusive, this process
    /// included through another [`LockFile`]); `None` when it is free. Never takes the lock.
    pub fn probe(&self) -> Option<String> {
        let mut query = flock(libc::F_WRLCK);
        let held = match fcntl(&self.file, FcntlArg::F_OFD_GETLK(&mut query)) {
            Ok(_) => query.l_type != libc::F_UNLCK as libc::c_short,
            // A lock that cannot be tested is reported free, as a missing lock file is.
            Err(_) => false,
        };
        probe_delay();
        held.then(|| holder(&self.path))
    }
}

/// A test hook that widens the moment between a probe's test and its answer
/// (`LOOP_ORCHESTRATOR_TEST_PROBE_DELAY_MS`), so a test can show that nothing is held
/// meanwhile. Read once; unset, it costs nothing.
fn probe_delay() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("LOOP_ORCHESTRATOR_TEST_PROBE_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(delay) = delay {
        std::thread::sleep(*delay);
    }
}

/// A whole-file lock request of `kind` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`).
fn flock(kind: libc::c_int) -> libc::flock {
    // SAFETY: `libc::flock` is a plain C struct for which all-zero bytes are a valid value
    // (start 0, length 0 = the whole file, whence SEEK_SET, pid 0 as OFD locks require).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

fn set_lock(file: &File, kind: libc::c_int) -> io::Result<()> {
    fcntl(file, FcntlArg::F_OFD_SETLK(&flock(kind)))
        .map(|_| ())
        .map_err(io::Error::from)
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

    fn inst() -> (tempfile::TempDir, Instance) {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        (dir, inst)
    }

    #[test]
    fn second_exclusive_is_refused_with_the_holders_pid() {
        let (_dir, inst) = inst();
        let mut first = LockFile::schedule(&inst, "a").unwrap();
        let _guard = first.try_exclusive().unwrap();
        let mut second = LockFile::schedule(&inst, "a").unwrap();
        match second.try_exclusive() {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("lock taken twice"),
        }
        assert_eq!(second.probe(), Some(std::process::id().to_string()));
        let mut other = LockFile::schedule(&inst, "b").unwrap();
        assert!(
            other.try_exclusive().is_ok(),
            "locks of other schedules are independent"
        );
    }

    #[test]
    fn released_when_the_guard_drops() {
        let (_dir, inst) = inst();
        let mut first = LockFile::service(&inst).unwrap();
        drop(first.try_exclusive().unwrap());
        let mut second = LockFile::service(&inst).unwrap();
        assert!(second.probe().is_none());
        assert!(second.try_exclusive().is_ok());
        // The first file can take it again once the second lets go.
        drop(second);
        assert!(first.try_exclusive().is_ok());
    }

    #[test]
    fn shared_holders_coexist_and_exclude_exclusive() {
        let (_dir, inst) = inst();
        let mut a = LockFile::schedule(&inst, "p").unwrap();
        let mut b = LockFile::schedule(&inst, "p").unwrap();
        let _ga = a.try_shared().unwrap();
        let _gb = b.try_shared().unwrap();
        let mut c = LockFile::schedule(&inst, "p").unwrap();
        assert!(c.try_exclusive().is_err());
        assert!(c.probe().is_some(), "a shared holder counts as running");
    }

    #[test]
    fn released_when_the_holder_process_dies() {
        let (_dir, inst) = inst();
        let path = inst.schedule_lock("k");
        drop(LockFile::schedule(&inst, "k").unwrap());
        // Another process takes the OFD write lock: python's fcntl module can (no shell tool
        // takes OFD locks).
        if std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("skipped: python3 is missing; it plays the other process");
            return;
        }
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,struct,sys,time\n\
                 f=open(sys.argv[1],'r+')\n\
                 fcntl.fcntl(f, 37, struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))\n\
                 print('locked', flush=True)\n\
                 time.sleep(30)",
            )
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "locked");
        let mut lock = LockFile::schedule(&inst, "k").unwrap();
        assert!(lock.probe().is_some());
        assert!(lock.try_exclusive().is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(lock.probe().is_none());
        assert!(lock.try_exclusive().is_ok());
    }

    /// `status` and pollers probe a schedule's lock while the service fires it. A probe that
    /// took the lock to test it made the fire find the schedule busy ("a cycle of this
    /// schedule runs in pid <the service's own pid>") for the probe's moment.
    #[test]
    fn a_probe_never_makes_a_free_lock_look_taken() {
        let (_dir, inst) = inst();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let prober = {
            let (inst, stop) = (inst.clone(), stop.clone());
            std::thread::spawn(move || {
                let lock = LockFile::schedule(&inst, "s").unwrap();
                let mut probes = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = lock.probe();
                    probes += 1;
                }
                probes
            })
        };
        let mut fire = LockFile::schedule(&inst, "s").unwrap();
        for n in 0..20_000 {
            if let Err(err) = fire.try_exclusive() {
                panic!("fire {n} found the free lock taken: {err}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(prober.join().unwrap() > 0);
    }
}
