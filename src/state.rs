//! What the service tells other processes through `.loop-orchestrator/`: `service.json` (its
//! pid and the result of its last reload) and `escalated/<id>.json` (a paused schedule).
//!
//! Both are written whole to a temp file and renamed, so a reader never sees half a file.
//! An escalation marker records the schedule's fingerprint: when the entry in schedules.json
//! changes, the marker no longer applies (SPEC §7: paused "until the file changes").

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lock::STATE_DIR;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub reload: Option<ReloadResult>,
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

fn service_path(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("service.json")
}

fn escalation_path(dir: &Path, schedule: &str) -> PathBuf {
    dir.join(STATE_DIR)
        .join("escalated")
        .join(format!("{schedule}.json"))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub fn write_service(dir: &Path, state: &ServiceState) -> std::io::Result<()> {
    write_json(&service_path(dir), state)
}

pub fn read_service(dir: &Path) -> Option<ServiceState> {
    read_json(&service_path(dir))
}

pub fn mark_escalated(dir: &Path, schedule: &str, escalation: &Escalation) -> std::io::Result<()> {
    write_json(&escalation_path(dir, schedule), escalation)
}

pub fn escalation(dir: &Path, schedule: &str) -> Option<Escalation> {
    read_json(&escalation_path(dir, schedule))
}

/// Removes a schedule's escalation marker; true when there was one.
pub fn clear_escalation(dir: &Path, schedule: &str) -> bool {
    std::fs::remove_file(escalation_path(dir, schedule)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        assert!(escalation(dir.path(), "a").is_none());
        let e = Escalation {
            at: Utc::now(),
            failures: 3,
            fingerprint: "fp".into(),
        };
        mark_escalated(dir.path(), "a", &e).unwrap();
        assert_eq!(escalation(dir.path(), "a").unwrap().fingerprint, "fp");
        assert!(clear_escalation(dir.path(), "a"));
        assert!(!clear_escalation(dir.path(), "a"));
        assert!(escalation(dir.path(), "a").is_none());
    }
}
