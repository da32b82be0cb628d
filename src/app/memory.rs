//! `memory show|add|prune`: the memory file (SPEC §5) from outside a cycle.
//!
//! Rule: a write prunes with the instance's own limits (`memory` in schedules.json). When
//! schedules.json exists but does not validate, those limits are unknown, so `add` and a
//! prune without an explicit target refuse (exit 2, with the file's problems) rather than
//! prune with defaults the user did not choose; without a schedules.json the defaults are
//! the instance's limits. Every write goes through the instance's one memory store and lock.

use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;
use crate::memory::{MemoryDoc, MemoryLimits, MemoryStore, PruneReport, Section};

/// The memory file and its size against the limits.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shown {
    pub text: String,
    pub lines: usize,
    pub entries: usize,
    /// `None` when schedules.json does not validate.
    pub limits: Option<Limits>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Limits {
    pub max_lines: usize,
    pub target_lines: usize,
}

impl From<Limits> for MemoryLimits {
    fn from(l: Limits) -> MemoryLimits {
        MemoryLimits {
            max_lines: l.max_lines,
            target_lines: l.target_lines,
        }
    }
}

/// The instance's memory limits: from schedules.json, the defaults when there is none, an
/// error when it does not validate.
pub fn limits(inst: &Instance) -> Result<Limits, Error> {
    let settings = match Config::load(inst.root()) {
        Ok(config) => config.memory,
        Err(_) if !inst.schedules().exists() => Default::default(),
        Err(problems) => return Err(problems.into()),
    };
    Ok(Limits {
        max_lines: settings.max_lines,
        target_lines: settings.target_lines,
    })
}

/// The memory file's text; empty when there is none yet.
pub fn read_text(inst: &Instance) -> Result<String, Error> {
    match std::fs::read_to_string(inst.memory()) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(Error::Failed(format!(
            "cannot read {}: {err}",
            inst.memory().display()
        ))),
    }
}

pub fn show(inst: &Instance) -> Result<Shown, Error> {
    let text = read_text(inst)?;
    let doc = MemoryDoc::parse(&text);
    Ok(Shown {
        lines: doc.line_count(),
        entries: doc.entry_count(),
        limits: limits(inst).ok(),
        text,
    })
}

/// Parses a section name as users write it.
pub fn section(name: &str) -> Result<Section, Error> {
    name.parse().map_err(|_| {
        Error::Invalid(format!(
            "unknown section {name:?} (expected one of: Implementation Patterns, Commands, System Updates)"
        ))
    })
}

/// Adds one entry, pruning when the file passes its limit.
pub fn add(inst: &Instance, section: Section, text: &str) -> Result<(), Error> {
    let limits = limits(inst).map_err(refused("the entry was not added"))?;
    MemoryStore::of(inst)
        .add_and_prune(&[(section, text.to_string())], limits.into())
        .map(|_| ())
        .map_err(Error::failed)
}

/// Prunes down to `target_lines` (default: the instance's) now, whatever the file's length.
pub fn prune(inst: &Instance, target_lines: Option<usize>) -> Result<PruneReport, Error> {
    let limits = match (limits(inst), target_lines) {
        (Ok(limits), Some(target)) => Limits {
            target_lines: target,
            ..limits
        },
        (Ok(limits), None) => limits,
        // A forced prune to an explicit target reads no limit of the file.
        (Err(_), Some(target)) => Limits {
            max_lines: target,
            target_lines: target,
        },
        (Err(err), None) => return Err(refused("nothing was pruned")(err)),
    };
    MemoryStore::of(inst)
        .prune(limits.into(), true)
        .map_err(Error::failed)
}

/// Adds to an invalid-configuration error what was not done and why.
fn refused(what: &'static str) -> impl Fn(Error) -> Error {
    move |err| match err {
        Error::Problems(mut problems) => {
            if let Some(first) = problems.first().cloned() {
                problems.push(crate::config::Problem {
                    message: format!(
                        "{what}: schedules.json sets the memory limits and does not validate; fix it and try again"
                    ),
                    ..first
                });
            }
            Error::Problems(problems)
        }
        other => other,
    }
}
