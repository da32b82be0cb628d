//! The run folders of an instance: `.loop-orchestrator/runs/<run>/`, one per cycle and one per
//! `on_escalate` hook, holding their logs and prompt files.
//!
//! Rules: a run's name starts with its UTC start time (`20261121T100003.123Z-<schedule>`, with
//! `~escalate` for a hook), so names sort by age; two runs of a schedule starting in the same
//! millisecond get a counter. A finished run gets a `.finished` marker. Retention keeps the
//! newest [`KEEP_RUNS`] folders and never removes one still running (in this process or
//! another): a folder without the marker (its process died) goes only once a day old.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::instance::{FINISHED_MARKER, Instance};

/// Run folders kept; older ones are removed.
pub const KEEP_RUNS: usize = 100;
/// A run folder without the marker (its process died) is removed after this long.
const STALE_RUN: Duration = Duration::from_secs(24 * 3_600);

/// The timestamp that starts run and cycle ids.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// Creates a new run folder named `<stamp>-<name>` (with a counter when taken); returns its
/// name and path.
pub fn create(
    inst: &Instance,
    name: &str,
    started: DateTime<Utc>,
) -> std::io::Result<(String, PathBuf)> {
    create_named(inst, &format!("{}-{name}", stamp(started)))
}

/// Creates a new run folder named `base` (with a counter when taken); returns its name and
/// path. A cluster names a cycle before it runs (its claim carries the id), so the folder
/// takes the name it is given.
pub fn create_named(inst: &Instance, base: &str) -> std::io::Result<(String, PathBuf)> {
    let runs = inst.runs_dir();
    std::fs::create_dir_all(&runs)?;
    for n in 1.. {
        let run = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let path = runs.join(&run);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok((run, path)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
    unreachable!("the counter is unbounded")
}

/// Marks a run folder finished, then applies retention.
pub fn finish(inst: &Instance, run_dir: &std::path::Path) {
    let _ = std::fs::write(run_dir.join(FINISHED_MARKER), b"");
    remove_old(inst, KEEP_RUNS);
}

/// Keeps the newest `keep` run folders, never removing a running one (see the module doc).
pub fn remove_old(inst: &Instance, keep: usize) {
    let runs = inst.runs_dir();
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return;
    };
    let mut names: Vec<_> = entries
        .filter_map(|e| e.ok())
        // The type the directory listing gives: no stat per folder, on every cycle.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    if names.len() <= keep {
        return;
    }
    names.sort();
    let mut excess = names.len() - keep;
    for name in &names {
        if excess == 0 {
            break;
        }
        let path = runs.join(name);
        let finished = path.join(FINISHED_MARKER).exists();
        let stale = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_RUN));
        if (finished || stale) && std::fs::remove_dir_all(&path).is_ok() {
            excess -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_never_removes_the_folder_of_a_running_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        for i in 0..30 {
            let run = inst.run_dir(&format!("20261121T1000{i:02}.000Z-s"));
            std::fs::create_dir_all(&run).unwrap();
            // The five oldest are still running; the rest are finished.
            if i >= 5 {
                std::fs::write(run.join(FINISHED_MARKER), b"").unwrap();
            }
        }
        remove_old(&inst, 10);
        let mut left: Vec<String> = std::fs::read_dir(inst.runs_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 10);
        for i in 0..5 {
            assert!(
                left.contains(&format!("20261121T1000{i:02}.000Z-s")),
                "running cycle {i} lost its folder"
            );
        }
        assert!(
            left.contains(&"20261121T100029.000Z-s".to_string()),
            "the newest stay"
        );
    }

    #[test]
    fn finished_escalation_hook_runs_are_removed_like_cycles() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let at: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        for i in 0..(KEEP_RUNS + 5) {
            let (_, path) = create(
                &inst,
                "s~escalate",
                at + chrono::TimeDelta::seconds(i as i64),
            )
            .unwrap();
            finish(&inst, &path);
        }
        let left = std::fs::read_dir(inst.runs_dir()).unwrap().count();
        assert_eq!(left, KEEP_RUNS);
        assert!(
            !inst.run_dir("20261121T100000.000Z-s~escalate").exists(),
            "the oldest went"
        );
    }

    #[test]
    fn runs_created_in_the_same_millisecond_get_a_counter() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        let at: DateTime<Utc> = "2026-11-21T10:00:00.123Z".parse().unwrap();
        let (a, _) = create(&inst, "s", at).unwrap();
        let (b, path) = create(&inst, "s", at).unwrap();
        assert_eq!(a, "20261121T100000.123Z-s");
        assert_eq!(b, "20261121T100000.123Z-s-2");
        assert!(path.is_dir());
    }
}
