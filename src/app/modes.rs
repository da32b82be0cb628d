//! `modes import FILE [--agent A] [--force]` and `modes list`: Roo Code modes brought in as
//! mode files, and what each mode runs and which schedules use it.
//!
//! Rule: an import never overwrites a mode file without `force`; a file it kept makes the
//! command exit 2, so a script notices that nothing changed.

use std::path::Path;

use crate::agent::Agent;
use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;
use crate::roomodes::{ImportReport, ModeListing};

/// Imports the modes of a `.roomodes` file (JSON or YAML) running `agent`.
pub fn import(
    inst: &Instance,
    file: &Path,
    agent: &str,
    force: bool,
) -> Result<ImportReport, Error> {
    let agent = Agent::from_name(agent).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown agent {agent:?} (expected one of: claude, codex, gemini, aider)"
        ))
    })?;
    crate::roomodes::import(inst.root(), file, agent, force).map_err(Error::Problems)
}

/// Every mode of the instance, what it runs and the schedules that use it.
pub fn list(inst: &Instance) -> Result<Vec<ModeListing>, Error> {
    let config = Config::load(inst.root())?;
    Ok(crate::roomodes::list(&config))
}
