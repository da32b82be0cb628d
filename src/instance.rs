//! The instance directory (SPEC §1): the one place that knows where every file and folder of
//! an instance lives.
//!
//! Rule: nothing else joins a path literal onto an instance directory. A command gets an
//! [`Instance`] and asks it for `schedules()`, `timing()`, `schedule_lock(id)`, ...; the file
//! names users see in messages (`TODO.md:17`) are the constants below.
//!
//! ```text
//! schedules.json                 SCHEDULES
//! modes/<slug>.md                MODES_DIR
//! TODO.md                        TODO
//! persistent-memory.md           MEMORY
//! persistent-memory.archive.md   ARCHIVE
//! task_timing.tsv                TIMING
//! .loop-orchestrator/            STATE_DIR
//!   locks/service.lock           one service per directory
//!   locks/schedule-<id>.lock     one cycle of a schedule at a time (shared: `parallel`)
//!   locks/memory.lock            the memory file and its archive
//!   runs/<cycle>/<mode>.log      a cycle's logs and prompt files; `.finished` once done
//!   handoff/<id>.json            the last HANDOFF of a schedule's previous cycle
//!   escalated/<id>.json          a schedule escalated after max_failures
//!   paused/<id>.json             a schedule paused by a rate limit, until its reset
//!   service.json                 the running service: pid, last reload, cluster link
//!   instance-id                  a random id naming this instance to a cluster
//!   pids/<pgid>.json             a running mode's process group
//!   supervisors/<pid>:<start>    a live supervisor (left behind only by one that died)
//! ```

use std::path::{Path, PathBuf};

pub const SCHEDULES: &str = "schedules.json";
pub const MODES_DIR: &str = "modes";
pub const TODO: &str = "TODO.md";
pub const MEMORY: &str = "persistent-memory.md";
pub const ARCHIVE: &str = "persistent-memory.archive.md";
pub const TIMING: &str = "task_timing.tsv";
pub const STATE_DIR: &str = ".loop-orchestrator";

/// The name of the marker file in a finished run folder (only finished runs are removed by
/// retention).
pub const FINISHED_MARKER: &str = ".finished";

/// An instance directory. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    root: PathBuf,
}

impl Instance {
    /// The instance at `root`, as given (relative paths stay relative).
    pub fn new(root: impl Into<PathBuf>) -> Instance {
        Instance { root: root.into() }
    }

    /// The same instance with an absolute root (without resolving symlinks), so the paths it
    /// hands out mean the same from any working directory. Falls back to the path as given.
    pub fn absolute(&self) -> Instance {
        Instance::new(std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone()))
    }

    /// The same instance with its root canonicalized (symlinks resolved): what `LOOP_DIR`
    /// names, and what the reaper compares a child's `LOOP_DIR` with.
    pub fn canonical(&self) -> Instance {
        Instance::new(std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone()))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn schedules(&self) -> PathBuf {
        self.root.join(SCHEDULES)
    }

    pub fn modes_dir(&self) -> PathBuf {
        self.root.join(MODES_DIR)
    }

    pub fn mode_file(&self, slug: &str) -> PathBuf {
        self.modes_dir().join(format!("{slug}.md"))
    }

    pub fn todo(&self) -> PathBuf {
        self.root.join(TODO)
    }

    pub fn memory(&self) -> PathBuf {
        self.root.join(MEMORY)
    }

    pub fn archive(&self) -> PathBuf {
        self.root.join(ARCHIVE)
    }

    pub fn timing(&self) -> PathBuf {
        self.root.join(TIMING)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.state_dir().join("locks")
    }

    pub fn service_lock(&self) -> PathBuf {
        self.locks_dir().join("service.lock")
    }

    pub fn schedule_lock(&self, schedule: &str) -> PathBuf {
        self.locks_dir().join(format!("schedule-{schedule}.lock"))
    }

    /// The one lock of the memory file and its archive, whoever writes them.
    pub fn memory_lock(&self) -> PathBuf {
        self.locks_dir().join("memory.lock")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir().join("runs")
    }

    pub fn run_dir(&self, cycle: &str) -> PathBuf {
        self.runs_dir().join(cycle)
    }

    pub fn handoff(&self, schedule: &str) -> PathBuf {
        self.state_dir()
            .join("handoff")
            .join(format!("{schedule}.json"))
    }

    pub fn escalation(&self, schedule: &str) -> PathBuf {
        self.state_dir()
            .join("escalated")
            .join(format!("{schedule}.json"))
    }

    /// A schedule's rate-limit pause (SPEC §8).
    pub fn pause(&self, schedule: &str) -> PathBuf {
        self.state_dir()
            .join("paused")
            .join(format!("{schedule}.json"))
    }

    pub fn service_state(&self) -> PathBuf {
        self.state_dir().join("service.json")
    }

    /// The instance's id in a cluster: made once, kept across restarts (SPEC §11).
    pub fn instance_id(&self) -> PathBuf {
        self.state_dir().join("instance-id")
    }

    pub fn pids_dir(&self) -> PathBuf {
        self.state_dir().join("pids")
    }

    pub fn supervisors_dir(&self) -> PathBuf {
        self.state_dir().join("supervisors")
    }

    /// A path inside the instance as users read it: relative to the root when it is inside.
    pub fn display<'a>(&self, path: &'a Path) -> std::path::Display<'a> {
        path.strip_prefix(&self.root).unwrap_or(path).display()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_inside_the_root_and_none_repeats() {
        let inst = Instance::new("inst");
        let paths = [
            inst.schedules(),
            inst.modes_dir(),
            inst.mode_file("a"),
            inst.todo(),
            inst.memory(),
            inst.archive(),
            inst.timing(),
            inst.state_dir(),
            inst.locks_dir(),
            inst.service_lock(),
            inst.schedule_lock("a"),
            inst.memory_lock(),
            inst.runs_dir(),
            inst.run_dir("c"),
            inst.handoff("a"),
            inst.escalation("a"),
            inst.pause("a"),
            inst.service_state(),
            inst.pids_dir(),
            inst.supervisors_dir(),
        ];
        let unique: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len());
        assert!(paths.iter().all(|p| p.starts_with("inst")));
        assert_eq!(inst.display(&inst.todo()).to_string(), "TODO.md");
    }
}
