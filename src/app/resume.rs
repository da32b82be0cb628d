//! `resume ID`: lifts a schedule's escalation and its rate-limit pause, and tells a running
//! service to re-read them.

use chrono::{SecondsFormat, Utc};

use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;
use crate::lock::LockFile;
use crate::memory::Section;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Resumed {
    pub schedule: String,
    /// Whether the schedule was escalated.
    pub was_escalated: bool,
    /// Whether the schedule was paused by a rate limit (its pause file is removed).
    pub was_paused: bool,
    /// The running service that was told (SIGHUP), if any.
    pub service_pid: Option<i32>,
    /// A memory entry that could not be written.
    pub warning: Option<String>,
}

pub fn resume(inst: &Instance, id: &str) -> Result<Resumed, Error> {
    // An id that is not in a valid schedules.json is refused; a broken file must not keep a
    // schedule paused, so its markers can still be lifted.
    if let Ok(config) = Config::load(inst.root()) {
        super::find_schedule(&config, id)?;
    }
    let mut resumed = Resumed {
        schedule: id.to_string(),
        was_escalated: crate::state::clear_escalation(inst, id),
        was_paused: crate::state::clear_pause(inst, id),
        service_pid: None,
        warning: None,
    };
    if !resumed.was_escalated && !resumed.was_paused {
        return Ok(resumed);
    }
    let entry = format!(
        "{} [{id}] resumed by `resume`",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    if let Err(err) = crate::memory::MemoryStore::of(inst).add(&[(Section::SystemUpdates, entry)]) {
        resumed.warning = Some(format!("memory entry not written: {err}"));
    }
    let service = LockFile::service(inst).ok().and_then(|l| l.probe());
    if let Some(pid) = service.and_then(|pid| pid.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        );
        resumed.service_pid = Some(pid);
    }
    Ok(resumed)
}
