//! The stop machine: how a run ends and what the runner does to end it (SPEC §3).
//!
//! Phases: `Running` (waiting for the leader, the deadline or cancellation) → on timeout or
//! cancellation `Stopping` (SIGTERM to the group, SIGKILL after `kill_grace`) → once the
//! leader has exited, `Reaping` if group members still live (SIGTERM, SIGKILL after
//! [`STRAY_GRACE`] at most) → `Draining` when the group is gone (reading what is left in
//! the pipes for [`DRAIN_LIMIT`] at most). Group liveness follows
//! [`group_alive`]: zombies do not count.
//!
//! Rules: every signal goes to the whole group; the leader's own exit status wins over a
//! timeout that falls due in the same instant; a group is never signalled once it is gone
//! (its id could be reused); and a run dropped before the end kills its group
//! ([`GroupGuard`]).

use std::io;
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunStatus;
use super::proc::group_alive;

/// How long stray group members get between SIGTERM and SIGKILL once the leader has
/// exited (never more than the run's `kill_grace`).
pub const STRAY_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read once the whole group is gone: only a process that
/// escaped the group can hold a pipe open that long.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How often a group that outlived its leader is checked while it is being reaped.
const GROUP_POLL: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The leader runs; waiting for it, the deadline or cancellation.
    Running,
    /// SIGTERM sent to the group; SIGKILL at `kill_at` (None once sent).
    Stopping { kill_at: Option<Instant> },
    /// The leader exited but group members remain: SIGTERM sent, SIGKILL at `kill_at`.
    Reaping { kill_at: Instant },
    /// The group is gone or killed; reading what is left in the pipes until `until`.
    Draining { until: Instant },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    Timeout,
    Cancelled,
}

/// How the leader ended and what the runner had to do about it.
#[derive(Default)]
pub(super) struct Ending {
    pub(super) exit: Option<ExitStatus>,
    pub(super) wait_error: Option<io::Error>,
    pub(super) stop: Option<Stop>,
    pub(super) killed_after_grace: bool,
    /// Group members were still running after the leader exited on its own.
    pub(super) strays: bool,
    /// Reading stopped with a pipe still open (held by an escaped descendant).
    pub(super) drain_cut: bool,
}

impl Ending {
    /// Records the leader's exit. A leader killed by a signal once the run is cancelled was
    /// killed by the stop (a forced stop SIGKILLs every group at once, which the runner may
    /// see before it sees the cancellation): the run is interrupted, not failed.
    fn leader_exited(&mut self, status: ExitStatus, cancel: &CancellationToken) {
        self.exit = Some(status);
        if self.stop.is_none() && cancel.is_cancelled() && status.signal().is_some() {
            self.stop = Some(Stop::Cancelled);
        }
    }

    /// Our own stop decides first; then a sink's `blocked`; then the exit status.
    pub(super) fn status(&self, blocked: bool) -> RunStatus {
        match self.stop {
            Some(Stop::Timeout) => RunStatus::Timeout,
            Some(Stop::Cancelled) => RunStatus::Interrupted,
            None if blocked => RunStatus::Blocked,
            None if self.exit.is_some_and(|s| s.success()) => RunStatus::Ok,
            None => RunStatus::Failed,
        }
    }
}

/// One run's stop machine; the run's loop feeds it events and sleeps until [`Self::wake_at`].
pub(super) struct StopMachine {
    guard: GroupGuard,
    phase: Phase,
    deadline: Instant,
    timeout: Duration,
    kill_grace: Duration,
    end: Ending,
}

impl StopMachine {
    pub(super) fn new(
        guard: GroupGuard,
        start: Instant,
        timeout: Duration,
        kill_grace: Duration,
    ) -> StopMachine {
        StopMachine {
            guard,
            phase: Phase::Running,
            deadline: start.checked_add(timeout).unwrap_or_else(far_future),
            timeout,
            kill_grace,
            end: Ending::default(),
        }
    }

    fn pid(&self) -> i32 {
        self.guard.pgid.as_raw()
    }

    /// Whether the leader is still to be waited for.
    pub(super) fn leader_running(&self) -> bool {
        self.end.exit.is_none() && self.end.wait_error.is_none()
    }

    /// Whether nothing has stopped the run yet (cancellation still matters).
    pub(super) fn running(&self) -> bool {
        matches!(self.phase, Phase::Running)
    }

    /// Whether the group is gone: the run ends once the pipes are closed.
    pub(super) fn draining(&self) -> bool {
        matches!(self.phase, Phase::Draining { .. })
    }

    /// When the machine next has something to do on its own.
    pub(super) fn wake_at(&self) -> Instant {
        match self.phase {
            Phase::Running => self.deadline,
            Phase::Stopping { kill_at } => kill_at.unwrap_or_else(far_future),
            Phase::Reaping { kill_at } => kill_at.min(Instant::now() + GROUP_POLL),
            Phase::Draining { until } => until,
        }
    }

    /// The leader was waited for.
    pub(super) fn leader_waited(
        &mut self,
        status: io::Result<ExitStatus>,
        cancel: &CancellationToken,
    ) {
        match status {
            Ok(status) => self.end.leader_exited(status, cancel),
            Err(error) => self.end.wait_error = Some(error),
        }
        self.after_leader_exit();
    }

    /// The run was cancelled while running.
    pub(super) fn cancelled(&mut self, child: &mut Child, cancel: &CancellationToken) {
        if let Ok(Some(status)) = child.try_wait() {
            self.end.leader_exited(status, cancel);
            self.after_leader_exit();
        } else {
            tracing::warn!(pid = self.pid(), "run cancelled; terminating the group");
            self.end.stop = Some(Stop::Cancelled);
            self.begin_stop();
        }
    }

    /// [`Self::wake_at`] has come. `Break` when reading must stop.
    pub(super) fn wake(
        &mut self,
        child: &mut Child,
        cancel: &CancellationToken,
    ) -> ControlFlow<()> {
        let pid = self.pid();
        match self.phase {
            Phase::Running => {
                // The leader may have exited in the same instant: its own status wins.
                if let Ok(Some(status)) = child.try_wait() {
                    self.end.leader_exited(status, cancel);
                    self.after_leader_exit();
                } else {
                    let timeout = self.timeout;
                    tracing::warn!(pid, ?timeout, "timed out; terminating the group");
                    self.end.stop = Some(Stop::Timeout);
                    self.begin_stop();
                }
            }
            Phase::Stopping { kill_at: Some(_) } => {
                let kill_grace = self.kill_grace;
                tracing::warn!(pid, ?kill_grace, "alive after the grace; killing the group");
                signal_group(self.guard.pgid, Signal::SIGKILL);
                self.end.killed_after_grace = true;
                self.phase = Phase::Stopping { kill_at: None };
            }
            Phase::Stopping { kill_at: None } => {}
            Phase::Reaping { kill_at } => {
                if Instant::now() >= kill_at {
                    tracing::warn!(pid, "stray group members outlived the grace; killing");
                    signal_group(self.guard.pgid, Signal::SIGKILL);
                    self.begin_draining();
                } else if !group_alive(pid) {
                    self.begin_draining();
                }
            }
            Phase::Draining { .. } => {
                tracing::warn!(
                    pid,
                    "output still open after the group is gone; stop reading"
                );
                self.end.drain_cut = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// How the run ended.
    pub(super) fn finish(self) -> Ending {
        self.end
    }

    fn begin_stop(&mut self) {
        signal_group(self.guard.pgid, Signal::SIGTERM);
        self.phase = Phase::Stopping {
            kill_at: Some(Instant::now() + self.kill_grace),
        };
    }

    fn after_leader_exit(&mut self) {
        if !group_alive(self.pid()) {
            self.begin_draining();
            return;
        }
        // After our own SIGTERM, members still dying are not strays worth a note.
        if self.end.stop.is_none() {
            tracing::info!(
                pgid = self.pid(),
                "leader exited; terminating stray group members"
            );
            self.end.strays = true;
        }
        signal_group(self.guard.pgid, Signal::SIGTERM);
        self.phase = Phase::Reaping {
            kill_at: Instant::now() + self.kill_grace.min(STRAY_GRACE),
        };
    }

    fn begin_draining(&mut self) {
        // Nothing of the group runs any more; signalling the id later could hit a reused one.
        self.guard.disarm();
        self.phase = Phase::Draining {
            until: Instant::now() + DRAIN_LIMIT,
        };
    }
}

/// Sends `sig` to the group; a group that is already gone is not an error.
fn signal_group(pgid: Pid, sig: Signal) {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            let (pgid, signal) = (pgid.as_raw(), sig.as_str());
            tracing::warn!(pgid, signal, %error, "cannot signal the process group");
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// Kills the whole group with SIGKILL if the run is dropped before the end.
pub(super) struct GroupGuard {
    pgid: Pid,
    armed: bool,
    /// The group's pid record, removed once the group is gone.
    record: Option<PathBuf>,
}

impl GroupGuard {
    pub(super) fn new(pgid: Pid, record: Option<PathBuf>) -> GroupGuard {
        GroupGuard {
            pgid,
            armed: true,
            record,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                pgid = self.pgid.as_raw(),
                "run dropped; killing the process group"
            );
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::proc::running;
    use crate::runner::testing::{assert_gone, fixture, read_pids, run_ok, spec};
    use crate::runner::{RunOutcome, RunSpec, run};
    use nix::sys::signal::kill;
    use std::path::Path;
    use tokio::task::JoinHandle;

    #[tokio::test]
    async fn timeout_kills_leader_and_grandchild() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let mut s = spec(dir.path(), &[&fixture("sleep-with-grandchild.sh")]);
        s.env = vec![("PID_FILE".into(), pid_file.display().to_string())];
        s.timeout = Duration::from_secs(2);
        s.kill_grace = Duration::from_secs(3);
        let started = std::time::Instant::now();
        let outcome = run_ok(s, CancellationToken::new()).await;
        let elapsed = started.elapsed();
        let (leader, grandchild) = read_pids(&pid_file).await;

        assert_eq!(outcome.status, RunStatus::Timeout, "{outcome:?}");
        assert_eq!(outcome.signal, Some(Signal::SIGTERM as i32), "{outcome:?}");
        assert!(
            elapsed < Duration::from_secs(2 + 3 + 15),
            "took {elapsed:?}"
        );
        assert!(
            elapsed >= Duration::from_secs(2),
            "stopped before the timeout: {elapsed:?}"
        );
        assert!(
            outcome.summary.starts_with("timed out after 2s"),
            "{}",
            outcome.summary
        );
        assert_eq!(
            kill(Pid::from_raw(leader), None),
            Err(Errno::ESRCH),
            "the leader must be reaped"
        );
        assert_gone(grandchild, "grandchild").await;
        assert!(!group_alive(leader));
    }

    #[tokio::test]
    async fn child_ignoring_term_is_killed_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("ignore-term.sh")]);
        s.timeout = Duration::from_secs(1);
        s.kill_grace = Duration::from_secs(2);
        let log_path = s.log_path.clone();
        let started = std::time::Instant::now();
        let outcome = run_ok(s, CancellationToken::new()).await;
        let elapsed = started.elapsed();

        assert_eq!(outcome.status, RunStatus::Timeout);
        assert_eq!(outcome.signal, Some(Signal::SIGKILL as i32), "{outcome:?}");
        assert!(
            elapsed >= Duration::from_millis(2800),
            "SIGKILL came before the grace ended: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(1 + 2 + 15),
            "took {elapsed:?}"
        );
        let log = std::fs::read_to_string(log_path).unwrap();
        assert!(
            log.contains("got TERM"),
            "SIGTERM was not sent first: {log:?}"
        );
        assert_eq!(
            outcome.summary,
            "timed out after 1s; group killed after 2s grace"
        );
    }

    /// A run of a leader that sleeps beside a grandchild, both writing their pids to the
    /// returned file.
    fn sleeper_spec(dir: &Path) -> (RunSpec, PathBuf) {
        let pid_file = dir.join("pids");
        let mut s = spec(dir, &[&fixture("sleep-with-grandchild.sh")]);
        s.env = vec![("PID_FILE".into(), pid_file.display().to_string())];
        (s, pid_file)
    }

    /// The sleeper running as a task: its handle, its cancellation and (leader, grandchild).
    async fn start_sleeper(dir: &Path) -> (JoinHandle<RunOutcome>, CancellationToken, (i32, i32)) {
        let (s, pid_file) = sleeper_spec(dir);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_ok(s, cancel.clone()));
        (task, cancel, read_pids(&pid_file).await)
    }

    #[tokio::test]
    async fn cancellation_interrupts_and_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let (task, cancel, (leader, grandchild)) = start_sleeper(dir.path()).await;
        assert!(running(grandchild));
        let cancelled_at = std::time::Instant::now();
        cancel.cancel();
        let outcome = task.await.unwrap();

        assert_eq!(outcome.status, RunStatus::Interrupted);
        assert_eq!(outcome.summary, "interrupted; group terminated");
        assert!(cancelled_at.elapsed() < Duration::from_secs(2 + 15));
        assert_eq!(kill(Pid::from_raw(leader), None), Err(Errno::ESRCH));
        assert_gone(grandchild, "grandchild").await;
    }

    #[tokio::test]
    async fn a_group_killed_right_after_the_cancellation_is_interrupted_not_failed() {
        // A forced stop cancels every run and SIGKILLs every group at once; the runner
        // may see the death before the cancellation. Here both happen before it runs again
        // (one thread: the runner cannot poll between them).
        let dir = tempfile::tempdir().unwrap();
        let (task, cancel, (leader, grandchild)) = start_sleeper(dir.path()).await;
        cancel.cancel();
        killpg(Pid::from_raw(leader), Signal::SIGKILL).unwrap();
        // Blocking on purpose: the leader is dead before the runner polls again.
        std::thread::sleep(Duration::from_millis(100));
        let outcome = task.await.unwrap();
        assert_eq!(
            outcome.status,
            RunStatus::Interrupted,
            "{}",
            outcome.summary
        );
        assert_gone(grandchild, "grandchild").await;
    }

    #[tokio::test]
    async fn dropped_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let (s, pid_file) = sleeper_spec(dir.path());
        let run_future = run(s, &mut [], CancellationToken::new());
        let reader = read_pids(&pid_file);
        // Running both until the pids are known, then dropping the run future mid-run.
        let (leader, grandchild) = tokio::select! {
            _ = run_future => panic!("the run ended on its own"),
            pids = reader => pids,
        };
        for _ in 0..100 {
            if !running(leader) && !running(grandchild) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!running(leader), "leader survived the dropped run");
        assert!(!running(grandchild), "grandchild survived the dropped run");
    }

    async fn leader_exit_leaves_no_grandchild(grandchild_output: &str) {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let mut s = spec(dir.path(), &[&fixture("sleep-with-grandchild.sh")]);
        s.env = vec![
            ("PID_FILE".into(), pid_file.display().to_string()),
            ("LEADER_SLEEP".into(), "0".into()),
            ("GRANDCHILD_OUTPUT".into(), grandchild_output.into()),
        ];
        let outcome = run_ok(s, CancellationToken::new()).await;
        let (leader, grandchild) = read_pids(&pid_file).await;

        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert_eq!(outcome.summary, "exit 0; stray descendants terminated");
        assert!(outcome.duration < Duration::from_secs(20), "{outcome:?}");
        assert_eq!(kill(Pid::from_raw(leader), None), Err(Errno::ESRCH));
        assert_gone(grandchild, "grandchild").await;
    }

    #[tokio::test]
    async fn grandchild_holding_the_pipes_is_gone_after_leader_exits() {
        leader_exit_leaves_no_grandchild("pipe").await;
    }

    #[tokio::test]
    async fn grandchild_with_its_own_output_is_gone_after_leader_exits() {
        leader_exit_leaves_no_grandchild("null").await;
    }

    #[tokio::test]
    async fn escaped_descendant_holding_stdout_does_not_hang_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("escaped.pid");
        let mut s = spec(dir.path(), &[&fixture("escape-group.sh")]);
        s.env = vec![("PID_FILE".into(), pid_file.display().to_string())];
        let outcome = run_ok(s, CancellationToken::new()).await;
        let escaped: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let was_running = running(escaped);
        let _ = kill(Pid::from_raw(escaped), Signal::SIGKILL);

        assert!(
            was_running,
            "the fixture's process did not escape the group"
        );
        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert!(outcome.duration < Duration::from_secs(20), "{outcome:?}");
        assert!(
            outcome.summary.contains("escaped descendant"),
            "{}",
            outcome.summary
        );
    }
}
