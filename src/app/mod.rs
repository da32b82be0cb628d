//! The commands, as functions: typed arguments in, data out (progress through a callback).
//!
//! Rule: the CLI and the MCP server only parse and render; everything a command does —
//! loading and validating, locks, pruning, rows — happens here, the same for both. A command
//! returns `Result<_, `[`Error`]`>`; [`Error::exit_code`] is the one mapping to exit codes.
//! `serve` lives in [`crate::service`]; this layer may start it but adds nothing to it.

pub mod enable;
pub mod files;
pub mod init;
pub mod memory;
pub mod memory_section;
pub mod mode_prompt;
pub mod modes;
pub mod next;
pub mod report;
pub mod resume;
pub mod run_cycle;
pub mod schedules;
pub mod status;
pub mod timing;
pub mod todo;
pub mod validate;

use crate::config::Config;
use crate::exit::Error;
use crate::schedule::Schedule;

/// The schedule `id` of `config`, or an error listing the ids there are.
pub fn find_schedule<'a>(config: &'a Config, id: &str) -> Result<&'a Schedule, Error> {
    config.schedule(id).ok_or_else(|| {
        let ids: Vec<&str> = config.schedules.iter().map(|s| s.id.as_str()).collect();
        Error::Invalid(format!(
            "schedules.json has no schedule {id:?} (expected one of: {})",
            ids.join(", ")
        ))
    })
}
