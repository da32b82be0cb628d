//! The errors of the memory store: each says what failed and where (the file, or the
//! unknown section name), and how to fix it when that is known.

use std::io;
use std::path::PathBuf;

use super::Section;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source} (check that its directory is writable)")]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed during each of {attempts} attempts to update it; \
         stop the other writer and retry"
    )]
    KeepsChanging { path: PathBuf, attempts: usize },
    #[error(
        "{path}: cannot append to section \"{section}\" without disturbing the entries \
         around it (an unclosed code fence or HTML block near that section?); \
         fix the markdown by hand"
    )]
    Layout { path: PathBuf, section: Section },
    #[error(
        "unknown memory section \"{name}\" \
         (expected one of: Implementation Patterns, Commands, System Updates)"
    )]
    UnknownSection { name: String },
}
