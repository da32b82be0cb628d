//! Process groups left behind by a supervisor that died (SIGKILL, OOM, power loss): the
//! reaper.
//!
//! Every mode runs in its own process group, which its supervisor kills when the mode ends —
//! unless the supervisor itself is killed first. So each running group has a pid record in
//! `.loop-orchestrator/pids/<pgid>.json` (written by the runner, [`crate::runner::record`]),
//! removed once the group is gone. The next `serve` or `run-cycle` on the directory calls [`reap`]: a record whose owner
//! is no longer alive names a leftover group, which is terminated (TERM, then KILL) and
//! reported, with an `interrupted` row for its mode and cycle.
//!
//! Pids are reused, so a record identifies processes by pid *and* start time (field 22 of
//! `/proc/<pid>/stat`): the owner is alive only if a process with its pid started at the
//! recorded time; a living group leader with another start time is someone else's.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::instance::Instance;
use crate::recorder::Recorder;
use crate::runner::proc::{group_alive, running, start_time};
use crate::runner::record::{PidRecord, alive_as_recorded, supervisor_tag};
use crate::timing::{Priority, Row, Status, sanitize_note};

/// A group found and terminated by [`reap`].
#[derive(Debug, Clone)]
pub struct Reaped {
    pub record: PidRecord,
    /// Whether any process of the group was still alive.
    pub was_alive: bool,
}

impl std::fmt::Display for Reaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        write!(
            f,
            "terminated a leftover process group {} of {}/{} (cycle {}), left by pid {} that died",
            r.pgid, r.label.schedule, r.label.mode, r.label.cycle, r.owner_pid
        )
    }
}

/// This process's registration as a supervisor of an instance, removed when the last
/// registration of that instance in this process drops (a clean exit). A process that runs
/// several cycles at once (the MCP server) registers once per cycle; the file stays while
/// any of them runs.
pub struct Registration(Option<PathBuf>);

/// Registrations alive in this process, by file.
fn registrations() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, usize>> {
    static LIVE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, usize>>> =
        std::sync::OnceLock::new();
    LIVE.get_or_init(Default::default)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let mut live = registrations().lock().unwrap_or_else(|p| p.into_inner());
            let count = live.entry(path.clone()).or_insert(1);
            *count -= 1;
            if *count == 0 {
                live.remove(&path);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Registers this process as a supervisor of `inst` for as long as the returned value lives.
pub fn register(inst: &Instance) -> Registration {
    let folder = inst.supervisors_dir();
    let path = folder.join(supervisor_tag());
    let mut live = registrations().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(count) = live.get_mut(&path) {
        *count += 1;
        return Registration(Some(path));
    }
    match std::fs::create_dir_all(&folder).and_then(|()| std::fs::write(&path, b"")) {
        Ok(()) => {
            live.insert(path.clone(), 1);
            Registration(Some(path))
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot register this supervisor; a crash would leave unrecorded children unreaped");
            Registration(None)
        }
    }
}

/// Processes of this instance (`LOOP_DIR`) whose supervisor (`LOOP_SUPERVISOR`) is dead: what
/// pid records cannot show — a child killed between its spawn and its record, or a descendant
/// that left its process group. Only processes of this user can be read, which are the only
/// ones a supervisor of this user could have started.
fn strays(inst: &Instance) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::canonicalize(inst.root()) else {
        return Vec::new();
    };
    let want_dir = format!("LOOP_DIR={}", dir.display());
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for pid in entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&want_dir.as_bytes()) {
            continue;
        }
        let Some(tag) = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"LOOP_SUPERVISOR="))
        else {
            continue;
        };
        let tag = String::from_utf8_lossy(tag).into_owned();
        let Some((owner, start)) = tag.split_once(':') else {
            continue;
        };
        let (Ok(owner), Ok(start)) = (owner.parse::<i32>(), start.parse::<u64>()) else {
            continue;
        };
        if !alive_as_recorded(owner, Some(start)) && running(pid) {
            found.push((pid, tag));
        }
    }
    found
}

/// Terminates the groups of dead owners and removes their records. Rows of the interrupted
/// modes and cycles are written through `recorder`.
pub fn reap(inst: &Instance, recorder: &Recorder) -> Vec<Reaped> {
    let mut reaped = Vec::new();
    let records: Vec<PathBuf> = std::fs::read_dir(inst.pids_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    for path in records {
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok())
        else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if alive_as_recorded(record.owner_pid as i32, record.owner_start) {
            continue; // its supervisor still runs and will finish the job
        }
        // Two processes may start at once (a `serve` and a `run-cycle`): the one whose rename
        // succeeds owns the record; the other finds it gone and leaves it.
        let claimed = path.with_extension(format!("reaping-{}", std::process::id()));
        if std::fs::rename(&path, &claimed).is_err() {
            continue;
        }
        let path = claimed;
        // The pgid cannot be reused while a member lives; a living leader that started at
        // another time is a stranger who took the number after the group died.
        let leader_is_stranger = start_time(record.pgid).is_some()
            && !alive_as_recorded(record.pgid, record.leader_start);
        let was_alive = !leader_is_stranger && group_alive(record.pgid);
        if was_alive {
            let pgid = Pid::from_raw(record.pgid);
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while group_alive(record.pgid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if group_alive(record.pgid) {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        tracing::warn!(
            pgid = record.pgid,
            owner = record.owner_pid,
            schedule = %record.label.schedule,
            cycle = %record.label.cycle,
            mode = %record.label.mode,
            was_alive,
            "leftover process group of a supervisor that died; terminated"
        );
        write_rows(recorder, &record, was_alive);
        let _ = std::fs::remove_file(&path);
        reaped.push(Reaped { record, was_alive });
    }
    // Whatever is still running for a dead supervisor, recorded or not. Only a supervisor
    // that died leaves its registration behind, so a clean history costs no scan of /proc.
    let dead: Vec<PathBuf> = std::fs::read_dir(inst.supervisors_dir())
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Some((pid, start)) = name.split_once(':') else {
                        return true;
                    };
                    !alive_as_recorded(pid.parse().unwrap_or(0), start.parse().ok())
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let strays = if dead.is_empty() {
        Vec::new()
    } else {
        strays(inst)
    };
    for path in dead {
        let _ = std::fs::remove_file(path);
    }
    if !strays.is_empty() {
        for (pid, _) in &strays {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while strays.iter().any(|(pid, _)| running(*pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (pid, tag) in &strays {
            if running(*pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            tracing::warn!(pid, supervisor = %tag, "unrecorded process of a supervisor that died; terminated");
        }
    }
    reaped
}

/// SIGKILLs every group this process recorded: a forced stop. The runners then see their
/// children die and still write their rows.
pub fn kill_own(inst: &Instance) -> usize {
    let Ok(entries) = std::fs::read_dir(inst.pids_dir()) else {
        return 0;
    };
    let me = std::process::id();
    let mut killed = 0;
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let Some(record) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<PidRecord>(&b).ok())
        else {
            continue;
        };
        if record.owner_pid == me && killpg(Pid::from_raw(record.pgid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

fn write_rows(recorder: &Recorder, record: &PidRecord, was_alive: bool) {
    let now = Utc::now();
    let note = sanitize_note(&format!(
        "left over by supervisor pid {} that died; {} at restart",
        record.owner_pid,
        if was_alive {
            "group terminated"
        } else {
            "group already gone"
        }
    ));
    let priority = if record.label.priority == "todo" {
        Priority::Todo
    } else {
        Priority::Schedule
    };
    let row = |mode: &str, started_at: DateTime<Utc>| Row {
        scheduled_at: record.label.scheduled_at,
        started_at,
        finished_at: now,
        duration_ms: (now - started_at).num_milliseconds().max(0) as u64,
        priority,
        schedule: record.label.schedule.clone(),
        cycle: record.label.cycle.clone(),
        mode: mode.to_string(),
        attempt: record.label.attempt.max(1),
        status: Status::Interrupted,
        exit_code: None,
        cost_usd: None,
        note: note.clone(),
    };
    let rows = vec![
        row(&record.label.mode, record.started_at),
        Row {
            attempt: 1,
            ..row("cycle", record.started_at)
        },
    ];
    if let Err(err) = recorder.rows_blocking(rows) {
        tracing::error!(error = %err, "rows of a leftover group not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::record::{Label, record};
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn a_live_owner_keeps_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let inst = Instance::new(dir.path());
        let recorder = Recorder::inline_for_instance(&inst);
        record(&inst.pids_dir(), pgid, Label::default()).unwrap();
        assert!(
            reap(&inst, &recorder).is_empty(),
            "this test process, the owner, is alive"
        );
        assert!(group_alive(pgid));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_dead_owners_group_is_terminated_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let inst = Instance::new(dir.path());
        let recorder = Recorder::inline_for_instance(&inst);
        let path = record(
            &inst.pids_dir(),
            pgid,
            Label {
                schedule: "s".into(),
                cycle: "c".into(),
                mode: "m".into(),
                attempt: 1,
                ..Label::default()
            },
        )
        .unwrap();
        // Pretend the owner died: a recorded start time no process has.
        let mut rec: PidRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        rec.owner_start = Some(0);
        std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
        let reaped = reap(&inst, &recorder);
        assert_eq!(reaped.len(), 1);
        assert!(reaped[0].was_alive);
        let _ = child.wait();
        assert!(!group_alive(pgid));
        assert!(!path.exists(), "the record is removed");
        let log = crate::timing::TimingFile::new(inst.timing())
            .read()
            .unwrap();
        let statuses: Vec<(String, Status)> = log
            .rows
            .iter()
            .map(|r| (r.mode.clone(), r.status))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("m".to_string(), Status::Interrupted),
                ("cycle".to_string(), Status::Interrupted)
            ]
        );
    }
}
