//! Small state files written whole: [`write_atomic`] and [`read_json`].
//!
//! Rule: every small state file (handoffs, escalation markers, service.json) is written with
//! [`write_atomic`]: a temp file with a unique name in the same directory,
//! flushed, renamed over the target, then the directory flushed. So a reader sees the old
//! file or the new one, never a torn one; two writers at once each rename a whole file of
//! their own (the last rename wins) instead of writing into one shared temp name; and after a
//! crash the file is the old or the new version. A leftover temp file (a crash between create
//! and rename) starts with `.` and ends with `.tmp`, so watchers and readers ignore it.
//!
//! Pid records are the one exception: [`write_json_volatile`] renames a whole file the same
//! way but flushes nothing. A record only matters while its process group can outlive the
//! supervisor, which a machine crash cannot leave behind; flushing one per mode cost a cycle
//! of five modes 10 flushes (BENCHMARKS.md figure 5).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a valid state file ({source}); it is ignored until it is written again", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Replaces `path` with `bytes`, atomically and durably (see the module doc). Creates the
/// parent directory when missing. A new file gets mode 0600 (state is the owner's).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, None)
}

/// [`write_atomic`] of a file for others to read too (a report page): mode 0644.
pub fn write_atomic_readable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, bytes, Some(0o644))
}

/// [`write_atomic`] over an existing file, keeping its permission bits (a file people edit,
/// such as schedules.json, keeps the mode its owner gave it).
pub fn replace_keeping_mode(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    replace(path, bytes, Some(mode))
}

fn replace(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    replace_with(path, bytes, mode, true)
}

fn replace_with(path: &Path, bytes: &[u8], mode: Option<u32>, durable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent)?;
    tmp.write_all(bytes)?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    if !durable {
        return tmp.persist(path).map(drop).map_err(|err| err.error);
    }
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|err| err.error)?;
    sync_dir(parent)
}

/// [`write_atomic`] of a value as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// [`write_json`] without the flushes: a reader still sees the old file or the new one, but
/// after a machine crash the file may be missing or empty. Only for files that mean nothing
/// after a reboot (pid records; see the module doc).
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace_with(path, &bytes, None, false)
}

/// Reads a JSON state file: `Ok(None)` when it does not exist, an error naming the file when
/// it cannot be read or does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReadError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ReadError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

/// Flushes a directory, so a rename or a new entry in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let value: serde_json::Value = read_json(&path).unwrap().unwrap();
        assert_eq!(value["a"], 2);
        write_json_volatile(&path, &serde_json::json!({"a": 3})).unwrap();
        let value: serde_json::Value = read_json(&path).unwrap().unwrap();
        assert_eq!(value["a"], 3);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn missing_is_none_and_garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert!(read_json::<serde_json::Value>(&path).unwrap().is_none());
        std::fs::write(&path, b"{\"a\": ").unwrap();
        let err = read_json::<serde_json::Value>(&path).unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
    }

    #[test]
    fn concurrent_writers_never_leave_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for n in 0..50 {
                        let text = "x".repeat(1000 + i * 100 + n);
                        let value = serde_json::json!({ "text": text });
                        // Half the writers flush, half do not (pid records): both rename
                        // whole files.
                        if i % 2 == 0 {
                            write_json(&path, &value).unwrap();
                        } else {
                            write_json_volatile(&path, &value).unwrap();
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..400 {
                    if let Err(err) = read_json::<serde_json::Value>(&path) {
                        panic!("torn read: {err}");
                    }
                }
            })
        };
        for t in threads {
            t.join().unwrap();
        }
        reader.join().unwrap();
        assert!(read_json::<serde_json::Value>(&path).unwrap().is_some());
    }
}
