//! `resume ID`: lifts a schedule's escalation and its rate-limit pause, and tells a running
//! service to re-read them.
//!
//! In a cluster (a `cluster` section) the escalation is lifted in the cluster's database
//! first, so every node fires the schedule again (each reads the cluster's escalations every
//! few seconds); when the database does not answer nothing is changed, since a marker
//! removed here alone would be put back by this node's next read.

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
    /// In a cluster: whether the cluster held an escalation or a pause of it (now lifted on
    /// every node).
    pub cluster: Option<bool>,
    /// The running service that was told (SIGHUP), if any.
    pub service_pid: Option<i32>,
    /// A memory entry that could not be written.
    pub warning: Option<String>,
}

pub fn resume(inst: &Instance, id: &str) -> Result<Resumed, Error> {
    // An id that is not in a valid schedules.json is refused; a broken file must not keep a
    // schedule paused, so its markers can still be lifted.
    let mut in_cluster = None;
    if let Ok(config) = Config::load(inst.root()) {
        super::find_schedule(&config, id)?;
        if let Some(section) = &config.cluster {
            in_cluster = Some(resume_in_cluster(section, id)?);
        }
    }
    let local = crate::state::clear_escalation(inst, id);
    let mut resumed = Resumed {
        schedule: id.to_string(),
        was_escalated: local || in_cluster == Some(true),
        was_paused: crate::state::clear_pause(inst, id),
        cluster: in_cluster,
        service_pid: None,
        warning: None,
    };
    if !resumed.was_escalated && !resumed.was_paused {
        return Ok(resumed);
    }
    let entry = format!(
        "{} [{id}] resumed by `resume`{}",
        Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        if resumed.cluster == Some(true) {
            " (on every node of the cluster)"
        } else {
            ""
        }
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

/// Deletes the cluster's escalation and rate-limit pause of `id`; true when there was either.
fn resume_in_cluster(section: &crate::cluster::ClusterConfig, id: &str) -> Result<bool, Error> {
    let (url, _) = section
        .resolve(|key| std::env::var(key).ok())
        .map_err(|err| Error::Invalid(format!("resume: {err}")))?;
    let lease = section.lease.0;
    let runtime = crate::service::single_thread_runtime().map_err(Error::failed)?;
    runtime
        .block_on(async {
            let db = crate::cluster::Db::connect(&url, lease).await?;
            let lifted = async {
                let escalated = db.resume(id).await?;
                let paused = db.unpause(id).await?;
                Ok(escalated || paused)
            };
            tokio::time::timeout(lease, lifted)
                .await
                .unwrap_or(Err(crate::cluster::DbError::Timeout(lease)))
        })
        .map_err(|err| {
            Error::Failed(format!(
                "resume: the cluster's database does not answer, so {id} stays escalated on every node (nothing changed): {err}"
            ))
        })
}
