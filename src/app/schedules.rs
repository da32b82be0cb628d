//! The schedules of schedules.json as resolved at load (defaults applied), for a client that
//! lists them (`list_schedules` over MCP).
//!
//! Rule: the file goes through [`Config::load`], so what is listed is what `serve` would run;
//! a file that does not validate is an error with its problems, not a partial list.

use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;

/// One resolved schedule entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleInfo {
    pub id: String,
    pub task: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    /// The pipeline, in order.
    pub modes: Vec<String>,
    /// Limit of each mode run, in seconds.
    pub timeout_secs: u64,
    /// `skip`, `queue` or `parallel`.
    pub overlap: String,
    pub max_failures: u32,
    pub catch_up: bool,
    pub jitter_secs: u64,
    pub cwd: String,
    pub on_escalate: Option<Vec<String>>,
}

pub fn list(inst: &Instance) -> Result<Vec<ScheduleInfo>, Error> {
    let config = Config::load(inst.root())?;
    Ok(config
        .schedules
        .iter()
        .map(|s| ScheduleInfo {
            id: s.id.clone(),
            task: s.task.clone(),
            cron: s.cron.expr().to_string(),
            timezone: s.timezone.name().to_string(),
            enabled: s.enabled,
            modes: s.modes.clone(),
            timeout_secs: s.timeout.as_secs(),
            overlap: s.overlap.to_string(),
            max_failures: s.max_failures,
            catch_up: s.catch_up,
            jitter_secs: s.jitter.as_secs(),
            cwd: s.cwd.display().to_string(),
            on_escalate: s.on_escalate.clone(),
        })
        .collect())
}
