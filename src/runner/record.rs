//! Pid records: `.loop-orchestrator/pids/<pgid>.json`, one per running mode's process group,
//! written right after spawn and removed once the group is gone; what the reaper
//! (`leftover`) reads after a supervisor died.
//!
//! Pids are reused, so a record identifies processes by pid *and* start time (field 22 of
//! `/proc/<pid>/stat`): the owner is alive only if a process with its pid started at the
//! recorded time.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::proc::start_time;

/// What a group was doing, for the report and the rows written when it is reaped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Label {
    pub schedule: String,
    pub cycle: String,
    pub mode: String,
    pub attempt: u32,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub priority: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PidRecord {
    pub pgid: i32,
    pub leader_start: Option<u64>,
    pub owner_pid: u32,
    pub owner_start: Option<u64>,
    pub started_at: DateTime<Utc>,
    pub label: Label,
}

/// This process's start time, read once: every record and `LOOP_SUPERVISOR` names it.
fn own_start_time() -> Option<u64> {
    static START: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| start_time(std::process::id() as i32))
}

/// Writes the record of a group just spawned by this process into `pids_dir` (the instance's
/// `Instance::pids_dir`); returns its path.
pub fn record(pids_dir: &std::path::Path, pgid: i32, label: Label) -> std::io::Result<PathBuf> {
    let record = PidRecord {
        pgid,
        leader_start: start_time(pgid),
        owner_pid: std::process::id(),
        owner_start: own_start_time(),
        started_at: Utc::now(),
        label,
    };
    let path = pids_dir.join(format!("{pgid}.json"));
    // Not flushed: a record is read after the supervisor died, never after a reboot.
    crate::fsutil::write_json_volatile(&path, &record)?;
    Ok(path)
}

pub fn alive_as_recorded(pid: i32, start: Option<u64>) -> bool {
    match (start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        // Without a recorded start time, a living pid is given the benefit of the doubt.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The value of `LOOP_SUPERVISOR` this process gives its children: `<pid>:<start time>`.
pub fn supervisor_tag() -> String {
    let me = std::process::id();
    format!("{me}:{}", own_start_time().unwrap_or(0))
}
