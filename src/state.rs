//! What cycles and the service leave for other processes in `.loop-orchestrator/`:
//! `service.json` (the running service's pid, last reload and cluster link),
//! `escalated/<id>.json` (a paused schedule), `paused/<id>.json` (a schedule's rate-limit
//! pause) and `handoff/<id>.json` (the last HANDOFF of a schedule's previous cycle).
//!
//! Every file is written with [`crate::fsutil::write_atomic`], so a reader never sees half a
//! file, two writers at once never tear one (two `parallel` cycles saving their handoff), and a
//! crash leaves the old or the new version. A file that exists but does not parse is an error
//! the caller reports, never silently "nothing": a lost handoff loses the next cycle's plan.
//! An escalation marker records the schedule's fingerprint: when the entry in schedules.json
//! changes, the marker no longer applies (SPEC §7: paused "until the file changes").
//! A rate-limit pause holds until its instant, whatever the entry says: the agent's limit
//! does not change with the file; `resume` lifts it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, ReadError};
use crate::instance::Instance;
use crate::prompt::Handoff;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub reload: Option<ReloadResult>,
    /// The link to the cluster's database, when the service is a cluster node (as of its
    /// last change).
    #[serde(default)]
    pub cluster: Option<ClusterLink>,
}

/// A cluster node's link to the database, for `status` (SPEC §11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterLink {
    pub node: String,
    /// The database's URL, its password never shown.
    pub url: String,
    /// `connecting`, `up`, `down` (claiming nothing) or `refused` (the node name is taken).
    pub state: String,
    /// Since when the link is in this state.
    pub since: Option<DateTime<Utc>>,
    /// Why it is down or refused.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResult {
    pub at: DateTime<Utc>,
    pub trigger: String,
    pub ok: bool,
    /// file:line:column problems of a rejected reload.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalation {
    pub at: DateTime<Utc>,
    pub failures: u32,
    pub fingerprint: String,
}

/// A schedule paused because every argv of a mode was rate limited (SPEC §8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// When fires may run again: the agent's reset time, or `rate_limit_pause` after `at`.
    pub until: DateTime<Utc>,
    pub at: DateTime<Utc>,
    /// The cycle whose modes were limited, and what the agent said.
    pub cycle: String,
    pub note: String,
}

pub fn write_service(inst: &Instance, state: &ServiceState) -> std::io::Result<()> {
    fsutil::write_json(&inst.service_state(), state)
}

/// The running service's state; `None` when there is none or it cannot be read (it is only
/// shown by `status`, next to the service lock that says whether a service runs).
pub fn read_service(inst: &Instance) -> Option<ServiceState> {
    fsutil::read_json(&inst.service_state()).ok().flatten()
}

pub fn mark_escalated(
    inst: &Instance,
    schedule: &str,
    escalation: &Escalation,
) -> std::io::Result<()> {
    fsutil::write_json(&inst.escalation(schedule), escalation)
}

/// A schedule's escalation marker. An unreadable marker counts as one (with the fingerprint
/// unknown, so any entry lifts it): a schedule that escalated stays paused rather than firing
/// again because its marker was damaged; the damage is logged.
pub fn escalation(inst: &Instance, schedule: &str) -> Option<Escalation> {
    match fsutil::read_json(&inst.escalation(schedule)) {
        Ok(marker) => marker,
        Err(err) => {
            tracing::warn!(schedule, error = %err, "escalation marker unreadable; the schedule stays paused until `resume` or an edit of its entry");
            Some(Escalation {
                at: Utc::now(),
                failures: 0,
                fingerprint: String::new(),
            })
        }
    }
}

/// Removes a schedule's escalation marker; true when there was one.
pub fn clear_escalation(inst: &Instance, schedule: &str) -> bool {
    std::fs::remove_file(inst.escalation(schedule)).is_ok()
}

/// Records a schedule's pause; a pause already recorded that ends later is kept, so two
/// processes that were limited at once leave the longer pause.
pub fn save_pause(inst: &Instance, schedule: &str, pause: &Pause) -> std::io::Result<()> {
    if pause_of(inst, schedule).is_some_and(|p| p.until >= pause.until) {
        return Ok(());
    }
    fsutil::write_json(&inst.pause(schedule), pause)
}

/// A schedule's pause, ended or not (the caller compares `until` with its clock). An
/// unreadable file is logged and read as no pause: a pause is at most a rate limit's reset
/// away, and a damaged file must not stop a schedule for good.
pub fn pause_of(inst: &Instance, schedule: &str) -> Option<Pause> {
    match fsutil::read_json(&inst.pause(schedule)) {
        Ok(pause) => pause,
        Err(err) => {
            tracing::warn!(schedule, error = %err, "rate-limit pause unreadable; ignored");
            None
        }
    }
}

/// Removes a schedule's pause; true when there was one.
pub fn clear_pause(inst: &Instance, schedule: &str) -> bool {
    std::fs::remove_file(inst.pause(schedule)).is_ok()
}

/// The last HANDOFF of the schedule's previous cycle: `Ok(None)` when it has none yet.
pub fn load_handoff(inst: &Instance, schedule: &str) -> Result<Option<Handoff>, ReadError> {
    fsutil::read_json(&inst.handoff(schedule))
}

pub fn save_handoff(inst: &Instance, schedule: &str, handoff: &Handoff) -> std::io::Result<()> {
    fsutil::write_json(&inst.handoff(schedule), handoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        assert!(escalation(&inst, "a").is_none());
        let e = Escalation {
            at: Utc::now(),
            failures: 3,
            fingerprint: "fp".into(),
        };
        mark_escalated(&inst, "a", &e).unwrap();
        assert_eq!(escalation(&inst, "a").unwrap().fingerprint, "fp");
        assert!(clear_escalation(&inst, "a"));
        assert!(!clear_escalation(&inst, "a"));
        assert!(escalation(&inst, "a").is_none());
    }

    #[test]
    fn a_pause_round_trips_keeps_the_longer_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        assert!(pause_of(&inst, "a").is_none());
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let pause = |until: &str| Pause {
            until: at(until),
            at: at("2026-12-02T10:00:00Z"),
            cycle: "c".into(),
            note: "usage limit".into(),
        };
        save_pause(&inst, "a", &pause("2026-12-02T12:00:00Z")).unwrap();
        save_pause(&inst, "a", &pause("2026-12-02T11:00:00Z")).unwrap();
        assert_eq!(
            pause_of(&inst, "a").unwrap().until,
            at("2026-12-02T12:00:00Z")
        );
        save_pause(&inst, "a", &pause("2026-12-02T13:00:00Z")).unwrap();
        assert_eq!(
            pause_of(&inst, "a").unwrap().until,
            at("2026-12-02T13:00:00Z")
        );
        std::fs::write(inst.pause("a"), b"{\"until\": 3").unwrap();
        assert!(
            pause_of(&inst, "a").is_none(),
            "a damaged pause is no pause"
        );
        assert!(clear_pause(&inst, "a"));
        assert!(!clear_pause(&inst, "a"));
    }

    /// Two `parallel` cycles of one schedule end at once: each saves its handoff. With one
    /// shared temp name, one writer's rename could move the other's half-written file into
    /// place, and the next cycle read no handoff at all.
    #[test]
    fn handoffs_saved_at_once_by_parallel_cycles_are_never_torn() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let inst = inst.clone();
                std::thread::spawn(move || {
                    for n in 0..200 {
                        let handoff = Handoff {
                            mode: "planning".into(),
                            cycle: format!("c{w}-{n}"),
                            // Long enough that a write takes more than one system call's moment.
                            text: format!("next: item {n} ").repeat(400 + 50 * w),
                        };
                        save_handoff(&inst, "s", &handoff).unwrap();
                    }
                })
            })
            .collect();
        let mut reads = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            match load_handoff(&inst, "s") {
                Ok(_) => reads += 1,
                Err(err) => panic!("a reader found a torn handoff after {reads} reads: {err}"),
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        let last = load_handoff(&inst, "s")
            .unwrap()
            .expect("a handoff is there");
        assert!(
            last.text.starts_with("next: item 199"),
            "{}",
            &last.text[..20]
        );
    }

    #[test]
    fn an_unreadable_handoff_is_an_error_not_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        assert!(load_handoff(&inst, "s").unwrap().is_none());
        std::fs::create_dir_all(inst.handoff("s").parent().unwrap()).unwrap();
        std::fs::write(inst.handoff("s"), b"{\"mode\": \"planning\", \"cyc").unwrap();
        let err = load_handoff(&inst, "s").unwrap_err();
        assert!(err.to_string().contains("s.json"), "{err}");
    }
}
