//! One mode's child process, from spawn to the last byte of output (SPEC §3).
//!
//! The runner knows nothing of cycles, schedules or configuration: the caller hands it a
//! [`RunSpec`] and gets back a [`RunOutcome`]. Its rules:
//!
//! - argv is run directly, never through a shell. The only substitution is a whole
//!   element equal to `{prompt_file}`, replaced by the prompt file's path.
//! - The child leads its own process group. Every signal goes to the whole group, and
//!   when the run ends — normally, by timeout, by cancellation, or because the future
//!   was dropped — no member of the group is left running.
//! - Stopping is a small state machine: SIGTERM to the group, `kill_grace` for the
//!   leader to exit, then SIGKILL. After the leader exits (for any reason) stray group
//!   members get SIGTERM, a short grace, then SIGKILL.
//! - stdout and stderr go to one log, interleaved as they arrive, capped at `log_cap`
//!   bytes plus one truncation marker. Reading never stops, so the child is never
//!   blocked on a full pipe, and memory stays bounded (fixed buffers, capped lines).
//! - stdout lines carry the output protocol (`MEMORY <Section>: text`, `HANDOFF: text`,
//!   `BLOCKED: reason`), read even past the log cap.
//!
//! Limits: a descendant that leaves the process group (`setsid`, `setpgid`) escapes the
//! group signals; if it holds an output pipe open, draining stops [`DRAIN_LIMIT`] after
//! the group is gone and the summary says so.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default cap on the bytes of output kept in a run's log.
pub const LOG_CAP: u64 = 8 * 1024 * 1024;
/// Environment of the supervisor that its children never inherit.
pub const SERVICE_ONLY_ENV: [&str; 5] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];
/// The one argv element that is replaced (whole) by the prompt file's path.
pub const PROMPT_FILE_PLACEHOLDER: &str = "{prompt_file}";
/// Longer stdout lines are never protocol lines.
pub const MAX_PROTOCOL_LINE: usize = 64 * 1024;
/// `MEMORY` lines kept per run; further ones are dropped and counted.
pub const MAX_MEMORY_ENTRIES: usize = 200;
/// `HANDOFF` lines kept per run; further ones are dropped and counted.
pub const MAX_HANDOFF_LINES: usize = 50;
/// How long stray group members get between SIGTERM and SIGKILL once the leader has
/// exited (never more than the run's `kill_grace`).
pub const STRAY_GRACE: Duration = Duration::from_secs(2);
/// How long output is still read once the whole group is gone: only a process that
/// escaped the group can hold a pipe open that long.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

const SUMMARY_MAX_CHARS: usize = 300;
/// Room for the last output line or the BLOCKED reason inside the summary, so the notes
/// after it (truncation, dropped lines) still fit.
const SUMMARY_DETAIL_CHARS: usize = 160;
const READ_CHUNK: usize = 64 * 1024;
/// stderr lines only feed the summary's "last line", so a short prefix is enough.
const STDERR_LINE_MAX: usize = 1024;
const GROUP_POLL: Duration = Duration::from_millis(25);

/// How the composed prompt reaches the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptDelivery {
    /// Written to the child's stdin, which is then closed.
    Stdin,
    /// Written to `prompt_file`, whose path is in `LOOP_PROMPT_FILE`; stdin is /dev/null.
    File,
    /// Not delivered; stdin is /dev/null.
    None,
}

/// Everything needed to run one child. The caller resolves argv[0], composes the prompt
/// and chooses the paths.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// argv[0] already resolved; elements equal to `{prompt_file}` are replaced.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Added on top of the inherited environment (LOOP_* etc.).
    pub env: Vec<(String, String)>,
    pub prompt: PromptDelivery,
    pub prompt_text: String,
    /// Written and fsynced when `prompt` is `File` or argv contains `{prompt_file}`;
    /// its path is then also exported as `LOOP_PROMPT_FILE` unless `env` sets it.
    pub prompt_file: PathBuf,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Created (truncated if present), with its parent directories.
    pub log_path: PathBuf,
    /// Bytes of output kept in the log; see [`LOG_CAP`].
    pub log_cap: u64,
    /// Where to keep a pid record of the group while it runs (instance directory and what
    /// the group is doing), so that a later supervisor can reap it if this one dies.
    pub record: Option<(PathBuf, crate::leftover::Label)>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Ok,
    Failed,
    Timeout,
    Blocked,
    Interrupted,
}

impl RunStatus {
    /// The word used in task_timing.tsv.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Timeout => "timeout",
            RunStatus::Blocked => "blocked",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    /// The signal that ended the leader, whoever sent it.
    pub signal: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// (section as written, text) from `MEMORY <Section>: text`, at most
    /// [`MAX_MEMORY_ENTRIES`].
    pub memory: Vec<(String, String)>,
    /// Texts of `HANDOFF: text` lines in order, at most [`MAX_HANDOFF_LINES`].
    pub handoff: Vec<String>,
    /// Reason of the first `BLOCKED: reason` line (possibly empty).
    pub blocked: Option<String>,
    /// What the run cost, from an agent CLI's JSON result line (see [`agent_result`]).
    pub cost_usd: Option<f64>,
    /// Size of the log file, truncation marker included.
    pub log_bytes: u64,
    /// Bytes the child wrote to stdout and stderr, kept or not.
    pub output_bytes: u64,
    pub truncated: bool,
    /// One line (at most 300 characters) for the TSV note.
    pub summary: String,
}

/// Why a child could not be started. Once it runs, every ending is a [`RunOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run an empty command: the mode's `command` needs at least a program")]
    EmptyCommand,
    #[error(
        "cannot run `{program}`: working directory {} does not exist or is not a directory",
        cwd.display()
    )]
    Cwd { program: String, cwd: PathBuf },
    #[error("cannot run `{program}`: {reason}")]
    Spawn {
        program: String,
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{program}`: cannot write the prompt file {}: {source}", path.display())]
    PromptFile {
        program: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{program}`: cannot create the log {}: {source}", path.display())]
    Log {
        program: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether any process (zombies included) is still in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        // 0 and negative values would address our own group or every process.
        return false;
    }
    matches!(
        killpg(Pid::from_raw(pgid), None),
        Ok(()) | Err(Errno::EPERM)
    )
}

/// Runs one child to completion. `Err` only when it cannot be started.
pub async fn run(spec: RunSpec, cancel: CancellationToken) -> Result<RunOutcome, RunError> {
    let RunSpec {
        argv,
        cwd,
        env,
        prompt,
        prompt_text,
        prompt_file,
        timeout,
        kill_grace,
        log_path,
        log_cap,
        record,
    } = spec;
    let program = argv.first().cloned().ok_or(RunError::EmptyCommand)?;
    if !cwd.is_dir() {
        return Err(RunError::Cwd { program, cwd });
    }
    let wants_file =
        prompt == PromptDelivery::File || argv.iter().skip(1).any(|a| a == PROMPT_FILE_PLACEHOLDER);
    if wants_file {
        write_prompt_file(&prompt_file, &prompt_text).map_err(|source| RunError::PromptFile {
            program: program.clone(),
            path: prompt_file.clone(),
            source,
        })?;
    }
    let mut log = CappedLog::create(&log_path, log_cap).map_err(|source| RunError::Log {
        program: program.clone(),
        path: log_path.clone(),
        source,
    })?;

    let mut cmd = Command::new(&program);
    cmd.args(argv.iter().skip(1).map(|arg| {
        if arg == PROMPT_FILE_PLACEHOLDER {
            prompt_file.as_os_str()
        } else {
            OsStr::new(arg)
        }
    }))
    .current_dir(&cwd)
    .stdin(if prompt == PromptDelivery::Stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    // Reaps the leader if this future is dropped; GroupGuard handles the rest of the group.
    .kill_on_drop(true);
    // The supervisor's own systemd channels are not the child's: an agent must not be able to
    // report READY or feed the watchdog on the service's behalf.
    for var in SERVICE_ONLY_ENV {
        cmd.env_remove(var);
    }
    if record.is_some() {
        // Marks the child and all it starts, so a later supervisor can find them even when
        // this one dies before the pid record is written.
        cmd.env("LOOP_SUPERVISOR", crate::leftover::supervisor_tag());
    }
    if wants_file {
        cmd.env("LOOP_PROMPT_FILE", &prompt_file);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));

    let started_at = Utc::now();
    let start = Instant::now();
    let spawn_error = |source: io::Error| RunError::Spawn {
        program: program.clone(),
        reason: spawn_reason(&source),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| spawn_error(io::Error::other("the child has no process id")))?;
    let record = record.and_then(|(dir, label)| match crate::leftover::record(&dir, pid, label) {
        Ok(path) => Some(path),
        Err(error) => {
            tracing::warn!(pid, %error, "cannot write the pid record; a crash would leave this group unreaped");
            None
        }
    });
    let mut guard = GroupGuard {
        pgid: Pid::from_raw(pid),
        armed: true,
        record,
    };
    tracing::info!(program = %program, pid, cwd = %cwd.display(), "started child");

    let _stdin_writer = match (prompt, child.stdin.take()) {
        (PromptDelivery::Stdin, Some(mut stdin)) => {
            let bytes = prompt_text.into_bytes();
            Some(AbortOnDrop(tokio::spawn(async move {
                // A child may close stdin early or never read it: that is its choice, not
                // a failure, so EPIPE and friends are only logged.
                let result = stdin.write_all(&bytes).await;
                drop(stdin);
                if let Err(error) = result {
                    tracing::debug!(pid, %error, "child did not read the whole prompt");
                }
            })))
        }
        _ => None,
    };

    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let mut out_lines = LineSplitter::new(MAX_PROTOCOL_LINE);
    let mut err_lines = LineSplitter::new(STDERR_LINE_MAX);
    let mut seen = Seen::default();

    let deadline = start.checked_add(timeout).unwrap_or_else(far_future);
    let mut phase = Phase::Running;
    let mut end = Ending::default();

    loop {
        if matches!(phase, Phase::Draining { .. }) && stdout.is_none() && stderr.is_none() {
            break;
        }
        let wake = match phase {
            Phase::Running => deadline,
            Phase::Stopping { kill_at } => kill_at.unwrap_or_else(far_future),
            Phase::Reaping { kill_at } => kill_at.min(Instant::now() + GROUP_POLL),
            Phase::Draining { until } => until,
        };
        let leader_running = end.exit.is_none() && end.wait_error.is_none();
        tokio::select! {
            status = child.wait(), if leader_running => {
                match status {
                    Ok(status) => end.leader_exited(status, &cancel),
                    Err(error) => end.wait_error = Some(error),
                }
                phase = after_leader_exit(&mut guard, kill_grace, &mut end);
            }
            () = cancel.cancelled(), if matches!(phase, Phase::Running) => {
                if let Ok(Some(status)) = child.try_wait() {
                    end.leader_exited(status, &cancel);
                    phase = after_leader_exit(&mut guard, kill_grace, &mut end);
                } else {
                    tracing::warn!(pid, "run cancelled; terminating the group");
                    end.stop = Some(Stop::Cancelled);
                    phase = begin_stop(guard.pgid, kill_grace);
                }
            }
            () = tokio::time::sleep_until(wake) => match phase {
                Phase::Running => {
                    // The leader may have exited in the same instant: its own status wins.
                    if let Ok(Some(status)) = child.try_wait() {
                        end.leader_exited(status, &cancel);
                        phase = after_leader_exit(&mut guard, kill_grace, &mut end);
                    } else {
                        tracing::warn!(pid, ?timeout, "timed out; terminating the group");
                        end.stop = Some(Stop::Timeout);
                        phase = begin_stop(guard.pgid, kill_grace);
                    }
                }
                Phase::Stopping { kill_at: Some(_) } => {
                    tracing::warn!(pid, ?kill_grace, "alive after the grace; killing the group");
                    signal_group(guard.pgid, Signal::SIGKILL);
                    end.killed_after_grace = true;
                    phase = Phase::Stopping { kill_at: None };
                }
                Phase::Stopping { kill_at: None } => {}
                Phase::Reaping { kill_at } => {
                    if Instant::now() >= kill_at {
                        tracing::warn!(pid, "stray group members outlived the grace; killing");
                        signal_group(guard.pgid, Signal::SIGKILL);
                        phase = draining(&mut guard);
                    } else if !group_has_running_members(guard.pgid.as_raw()) {
                        phase = draining(&mut guard);
                    }
                }
                Phase::Draining { .. } => {
                    tracing::warn!(pid, "output still open after the group is gone; stop reading");
                    end.drain_cut = true;
                    break;
                }
            },
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(n) if n > 0 => {
                    let chunk = &out_buf[..n];
                    log.write(chunk);
                    out_lines.feed(chunk, |line, complete| seen.stdout_line(line, complete));
                }
                other => {
                    if let Err(error) = other {
                        tracing::warn!(pid, %error, "reading the child's stdout failed");
                    }
                    stdout = None;
                    out_lines.finish(|line, complete| seen.stdout_line(line, complete));
                }
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(n) if n > 0 => {
                    let chunk = &err_buf[..n];
                    log.write(chunk);
                    err_lines.feed(chunk, |line, _| seen.stderr_line(line));
                }
                other => {
                    if let Err(error) = other {
                        tracing::warn!(pid, %error, "reading the child's stderr failed");
                    }
                    stderr = None;
                    err_lines.finish(|line, _| seen.stderr_line(line));
                }
            },
        }
    }
    // Pipes still held by an escaped process are closed here; the run is over.
    drop(stdout);
    drop(stderr);
    let finished_at = Utc::now();
    let duration = start.elapsed();
    let log = log.finish();
    let limits = Limits {
        timeout,
        kill_grace,
        log_cap,
    };

    let status = end.status(&seen);
    let summary = end.summary(status, &seen, &log, &limits);
    tracing::info!(pid, status = status.as_str(), ?duration, "child finished");

    Ok(RunOutcome {
        status,
        exit_code: end.exit.and_then(|s| s.code()),
        signal: end.exit.and_then(|s| s.signal()),
        started_at,
        finished_at,
        duration,
        memory: seen.memory,
        handoff: seen.handoff,
        blocked: seen.blocked,
        cost_usd: seen.cost_usd,
        log_bytes: log.bytes,
        output_bytes: log.output_bytes,
        truncated: log.truncated,
        summary,
    })
}

/// The limits a run was held to, for the summary.
struct Limits {
    timeout: Duration,
    kill_grace: Duration,
    log_cap: u64,
}

/// How the leader ended and what the runner had to do about it.
#[derive(Default)]
struct Ending {
    exit: Option<ExitStatus>,
    wait_error: Option<io::Error>,
    stop: Option<Stop>,
    killed_after_grace: bool,
    /// Group members were still running after the leader exited on its own.
    strays: bool,
    /// Reading stopped with a pipe still open (held by an escaped descendant).
    drain_cut: bool,
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

    /// Our own stop decides first; then BLOCKED; then the exit status.
    fn status(&self, seen: &Seen) -> RunStatus {
        match self.stop {
            Some(Stop::Timeout) => RunStatus::Timeout,
            Some(Stop::Cancelled) => RunStatus::Interrupted,
            None if seen.blocked.is_some() => RunStatus::Blocked,
            None if self.exit.is_some_and(|s| s.success()) => RunStatus::Ok,
            None => RunStatus::Failed,
        }
    }

    fn summary(&self, status: RunStatus, seen: &Seen, log: &LogSummary, limits: &Limits) -> String {
        let stop_note = || {
            if self.killed_after_grace {
                format!(
                    "group killed after {} grace",
                    humantime::format_duration(limits.kill_grace)
                )
            } else {
                "group terminated".to_owned()
            }
        };
        let mut summary = match status {
            RunStatus::Ok => "exit 0".to_owned(),
            RunStatus::Failed => {
                let code = self.exit.and_then(|s| s.code());
                let signal = self.exit.and_then(|s| s.signal());
                let mut s = match (&self.wait_error, code, signal) {
                    (Some(error), _, _) => format!("could not wait for the child: {error}"),
                    (None, Some(code), _) => format!("exit {code}"),
                    (None, None, Some(sig)) => format!("killed by {}", signal_name(sig)),
                    (None, None, None) => "ended without a status".to_owned(),
                };
                if let Some(line) = &seen.last_line {
                    s.push_str(": ");
                    s.push_str(&clip(line, SUMMARY_DETAIL_CHARS));
                }
                s
            }
            RunStatus::Timeout => format!(
                "timed out after {}; {}",
                humantime::format_duration(limits.timeout),
                stop_note()
            ),
            RunStatus::Interrupted => format!("interrupted; {}", stop_note()),
            RunStatus::Blocked => match seen.blocked.as_deref() {
                Some(reason) if !reason.is_empty() => {
                    format!("blocked: {}", clip(reason, SUMMARY_DETAIL_CHARS))
                }
                _ => "blocked (no reason given)".to_owned(),
            },
        };
        if self.strays {
            summary.push_str("; stray descendants terminated");
        }
        if seen.dropped_memory > 0 {
            summary.push_str(&format!(
                "; {} MEMORY lines over the limit of {MAX_MEMORY_ENTRIES} dropped",
                seen.dropped_memory
            ));
        }
        if seen.dropped_handoff > 0 {
            summary.push_str(&format!(
                "; {} HANDOFF lines over the limit of {MAX_HANDOFF_LINES} dropped",
                seen.dropped_handoff
            ));
        }
        if log.truncated {
            summary.push_str(&format!("; output truncated at {} bytes", limits.log_cap));
        }
        if let Some(error) = &log.error {
            summary.push_str(&format!("; log write failed: {error}"));
        }
        if self.drain_cut {
            summary.push_str("; output still open after the group was gone (escaped descendant)");
        }
        clip(&summary, SUMMARY_MAX_CHARS)
    }
}

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
enum Stop {
    Timeout,
    Cancelled,
}

fn begin_stop(pgid: Pid, kill_grace: Duration) -> Phase {
    signal_group(pgid, Signal::SIGTERM);
    Phase::Stopping {
        kill_at: Some(Instant::now() + kill_grace),
    }
}

fn after_leader_exit(guard: &mut GroupGuard, kill_grace: Duration, end: &mut Ending) -> Phase {
    if !group_has_running_members(guard.pgid.as_raw()) {
        return draining(guard);
    }
    // After our own SIGTERM, members still dying are not strays worth a note.
    if end.stop.is_none() {
        tracing::info!(
            pgid = guard.pgid.as_raw(),
            "leader exited; terminating stray group members"
        );
        end.strays = true;
    }
    signal_group(guard.pgid, Signal::SIGTERM);
    Phase::Reaping {
        kill_at: Instant::now() + kill_grace.min(STRAY_GRACE),
    }
}

fn draining(guard: &mut GroupGuard) -> Phase {
    // Nothing of the group runs any more; signalling the id later could hit a reused one.
    guard.disarm();
    Phase::Draining {
        until: Instant::now() + DRAIN_LIMIT,
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

/// Whether a member of group `pgid` is still running. Zombies do not count: they have
/// already died and wait for their (new) parent, often init, to reap them.
fn group_has_running_members(pgid: i32) -> bool {
    if !group_alive(pgid) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .and_then(proc_state)
            .is_some_and(|(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X' | 'x'))
    })
}

/// (state, process group) of a process from /proc/<pid>/stat, if it still exists.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Kills the whole group with SIGKILL if the run future is dropped before the end.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
    /// The group's pid record, removed once the group is gone.
    record: Option<PathBuf>,
}

impl GroupGuard {
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

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

fn write_prompt_file(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    // The prompt carries memory and plans: readable by the owner only. Not fsynced: the
    // file is the child's input, and after a crash there is no child to read it.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn spawn_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => {
            "no such program (or its #! interpreter is missing); check the mode's `command`"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied; is the program executable (chmod +x)?".to_owned()
        }
        _ if error.raw_os_error() == Some(Errno::ENOEXEC as i32) => {
            "not an executable format; a script needs a #! line".to_owned()
        }
        _ => error.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// One line of at most `max` characters: control characters become spaces.
fn clip(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        return flat.to_owned();
    }
    let mut clipped: String = flat.chars().take(max.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

/// The log file: the first `cap` bytes of output, then one marker with the exact count
/// of what was discarded.
///
/// Written with blocking calls on the async task, not through `tokio::fs`: a write lands in
/// the page cache in microseconds, while `tokio::fs` hands every chunk to a blocking-pool
/// thread and back (a thread start and two wake-ups per mode; figure 5 in BENCHMARKS.md).
/// The cap bounds what one run can write.
struct CappedLog {
    file: Option<std::fs::File>,
    cap: u64,
    kept: u64,
    discarded: u64,
    error: Option<io::Error>,
}

struct LogSummary {
    bytes: u64,
    output_bytes: u64,
    truncated: bool,
    error: Option<io::Error>,
}

impl CappedLog {
    fn create(path: &Path, cap: u64) -> io::Result<CappedLog> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(path)?;
        Ok(CappedLog {
            file: Some(file),
            cap,
            kept: 0,
            discarded: 0,
            error: None,
        })
    }

    fn write(&mut self, chunk: &[u8]) {
        let room = self.cap.saturating_sub(self.kept);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(chunk.len());
        self.discarded += (chunk.len() - keep) as u64;
        if keep == 0 {
            return;
        }
        self.kept += keep as u64;
        if let Some(file) = &mut self.file
            && let Err(error) = std::io::Write::write_all(file, &chunk[..keep])
        {
            // A full disk must not fail the run; keep reading, stop writing.
            tracing::warn!(%error, "cannot write the run log; output is discarded from here");
            self.file = None;
            self.error = Some(error);
        }
    }

    fn finish(mut self) -> LogSummary {
        let mut bytes = self.kept;
        if let Some(mut file) = self.file.take() {
            let mut result = Ok(());
            if self.discarded > 0 {
                let marker = truncation_marker(self.cap, self.discarded);
                result = std::io::Write::write_all(&mut file, marker.as_bytes());
                bytes += marker.len() as u64;
            }
            if let Err(error) = result {
                tracing::warn!(%error, "cannot finish the run log");
                self.error.get_or_insert(error);
            }
        }
        LogSummary {
            bytes,
            output_bytes: self.kept + self.discarded,
            truncated: self.discarded > 0,
            error: self.error,
        }
    }
}

/// The line appended to a log whose output went over the cap.
pub fn truncation_marker(cap: u64, discarded: u64) -> String {
    format!(
        "\n[loop-orchestrator: output truncated at {cap} bytes; {discarded} more bytes discarded]\n"
    )
}

/// Splits a byte stream into lines while holding at most `max` bytes of one line.
/// Longer lines are reported once, with their first `max` bytes and `complete = false`.
struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    overlong: bool,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
            overlong: false,
        }
    }

    fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let (part, newline) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            let room = self.max - self.buf.len();
            if part.len() > room {
                self.overlong = true;
            }
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            if newline {
                self.emit(&mut on_line);
                data = &data[part.len() + 1..];
            } else {
                data = &[];
            }
        }
    }

    fn finish(&mut self, mut on_line: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() || self.overlong {
            self.emit(&mut on_line);
        }
    }

    fn emit(&mut self, on_line: &mut impl FnMut(&[u8], bool)) {
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        on_line(line, !self.overlong);
        self.buf.clear();
        self.overlong = false;
    }
}

/// What the output said: the protocol (stdout) and the last non-empty line (either).
#[derive(Default)]
struct Seen {
    memory: Vec<(String, String)>,
    handoff: Vec<String>,
    blocked: Option<String>,
    dropped_memory: usize,
    dropped_handoff: usize,
    last_line: Option<String>,
    cost_usd: Option<f64>,
}

impl Seen {
    fn stdout_line(&mut self, line: &[u8], complete: bool) {
        let text = String::from_utf8_lossy(line);
        self.note_last(&text);
        if !complete {
            return;
        }
        if let Some(result) = agent_result(&text) {
            if result.cost_usd.is_some() {
                self.cost_usd = result.cost_usd;
            }
            // The agent's answer is inside the JSON: its lines carry the protocol.
            for line in result.text.lines() {
                self.protocol_line(line);
            }
            return;
        }
        self.protocol_line(&text);
    }

    fn protocol_line(&mut self, text: &str) {
        match parse_protocol(text) {
            Some(Protocol::Memory { section, text }) => {
                if self.memory.len() < MAX_MEMORY_ENTRIES {
                    self.memory.push((section.to_owned(), text.to_owned()));
                } else {
                    self.dropped_memory += 1;
                }
            }
            Some(Protocol::Handoff(text)) => {
                if self.handoff.len() < MAX_HANDOFF_LINES {
                    self.handoff.push(text.to_owned());
                } else {
                    self.dropped_handoff += 1;
                }
            }
            Some(Protocol::Blocked(reason)) => {
                self.blocked.get_or_insert_with(|| reason.to_owned());
            }
            None => {}
        }
    }

    fn stderr_line(&mut self, line: &[u8]) {
        self.note_last(&String::from_utf8_lossy(line));
    }

    fn note_last(&mut self, text: &str) {
        let text = text.trim();
        if !text.is_empty() {
            self.last_line = Some(clip(text, SUMMARY_DETAIL_CHARS));
        }
    }
}

/// The final line of a headless agent CLI asked for JSON output: `claude -p
/// --output-format json` prints one object, `--output-format stream-json` ends with one:
/// `{"type":"result", "result": "<the answer>", "total_cost_usd": 0.0123, ...}` (older
/// versions: `cost_usd`).
#[derive(Debug, PartialEq)]
struct AgentResult {
    text: String,
    cost_usd: Option<f64>,
}

/// Reads a stdout line as an agent CLI's JSON result, if it is one.
fn agent_result(line: &str) -> Option<AgentResult> {
    let line = line.trim();
    if !line.starts_with('{') || !line.contains("\"result\"") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("type")?.as_str()? != "result" {
        return None;
    }
    let cost_usd = ["total_cost_usd", "cost_usd"]
        .iter()
        .find_map(|key| value.get(*key)?.as_f64())
        .filter(|cost| cost.is_finite() && *cost >= 0.0);
    let text = value
        .get("result")
        .and_then(|r| r.as_str())
        .unwrap_or_default()
        .to_owned();
    Some(AgentResult { text, cost_usd })
}

#[derive(Debug, PartialEq, Eq)]
enum Protocol<'a> {
    Memory { section: &'a str, text: &'a str },
    Handoff(&'a str),
    Blocked(&'a str),
}

/// Reads one stdout line as a protocol line: the prefix after optional leading whitespace.
fn parse_protocol(line: &str) -> Option<Protocol<'_>> {
    let line = line.trim_start();
    if let Some(rest) = line.strip_prefix("HANDOFF:") {
        let text = rest.trim();
        return (!text.is_empty()).then_some(Protocol::Handoff(text));
    }
    if let Some(rest) = line.strip_prefix("BLOCKED:") {
        return Some(Protocol::Blocked(rest.trim()));
    }
    let rest = line.strip_prefix("MEMORY ")?;
    let (section, text) = rest.split_once(':')?;
    let (section, text) = (section.trim(), text.trim());
    (!section.is_empty() && !text.is_empty()).then_some(Protocol::Memory { section, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;

    const RUN_BOUND: Duration = Duration::from_secs(120);

    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    fn spec(dir: &Path, argv: &[&str]) -> RunSpec {
        RunSpec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: dir.to_path_buf(),
            env: Vec::new(),
            prompt: PromptDelivery::None,
            prompt_text: String::new(),
            prompt_file: dir.join(".loop-orchestrator/prompts/c1-mode.md"),
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            log_path: dir.join(".loop-orchestrator/runs/c1/mode.log"),
            log_cap: LOG_CAP,
            record: None,
        }
    }

    async fn run_ok(spec: RunSpec, cancel: CancellationToken) -> RunOutcome {
        tokio::time::timeout(RUN_BOUND, run(spec, cancel))
            .await
            .expect("run did not finish in time")
            .expect("child could not be started")
    }

    /// Waits for the fixture's "<leader pid> <grandchild pid>" file.
    async fn read_pids(path: &Path) -> (i32, i32) {
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Some((a, b)) = text.trim().split_once(' ')
            {
                return (a.parse().unwrap(), b.parse().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the fixture never wrote {}", path.display());
    }

    fn running(pid: i32) -> bool {
        proc_state(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
    }

    /// Killed processes that init must reap may linger as zombies a little while.
    async fn assert_gone(pid: i32, what: &str) {
        assert!(
            !running(pid),
            "{what} {pid} still runs after the run returned"
        );
        for _ in 0..300 {
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} {pid} still exists (kill(pid, 0) did not give ESRCH)");
    }

    fn find_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path.clone());
            }
            if path.is_dir() {
                found.extend(find_named(&path, prefix));
            }
        }
        found
    }

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
        assert!(!group_has_running_members(leader));
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

    #[tokio::test]
    async fn prompt_arrives_byte_for_byte_and_never_reaches_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let prompt = "He said \"hi\" and 'bye'; $(touch pwned) `touch pwned-backtick` ${HOME} \\n\n\
                      second line; rm -rf nothing && touch pwned-and\n\tünïcødé ✓ 🦀 — 日本語\n\n\
                      no newline at the end $(touch \"$PWD/pwned-pwd\")";
        let echo = fixture("echo-prompt.sh");
        let out = |name: &str| dir.path().join(name).display().to_string();

        let mut by_stdin = spec(dir.path(), &[&echo, "stdin", &out("stdin.out")]);
        by_stdin.prompt = PromptDelivery::Stdin;
        by_stdin.prompt_text = prompt.to_owned();

        let mut by_file = spec(dir.path(), &[&echo, "env", &out("file.out")]);
        by_file.prompt = PromptDelivery::File;
        by_file.prompt_text = prompt.to_owned();

        let mut by_arg = spec(
            dir.path(),
            &[
                &echo,
                "arg",
                &out("arg.out"),
                PROMPT_FILE_PLACEHOLDER,
                "x{prompt_file}",
                "$(touch pwned-arg)",
            ],
        );
        by_arg.prompt_text = prompt.to_owned();
        by_arg.prompt_file = dir.path().join("other/dir/prompt.md");

        for s in [by_stdin, by_file, by_arg] {
            let outcome = run_ok(s, CancellationToken::new()).await;
            assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        }
        for name in ["stdin.out", "file.out", "arg.out"] {
            let got = std::fs::read(dir.path().join(name)).unwrap();
            assert_eq!(got, prompt.as_bytes(), "{name} differs");
        }
        for name in ["file.out.stdin", "arg.out.stdin"] {
            let got = std::fs::read(dir.path().join(name)).unwrap();
            assert!(
                got.is_empty(),
                "stdin of a file-prompt child is not /dev/null"
            );
        }
        let prompt_file = dir.path().join("other/dir/prompt.md");
        assert_eq!(std::fs::read(&prompt_file).unwrap(), prompt.as_bytes());
        let args = std::fs::read_to_string(dir.path().join("arg.out.args")).unwrap();
        assert_eq!(
            args,
            format!(
                "{}\nx{{prompt_file}}\n$(touch pwned-arg)\n",
                prompt_file.display()
            )
        );
        assert_eq!(find_named(dir.path(), "pwned"), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn flood_is_capped_with_one_marker_and_completes() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &[&fixture("flood.sh"), "50"]);
        let log_path = s.log_path.clone();
        let outcome = run_ok(s, CancellationToken::new()).await;

        let total = 50 * 1024 * 1024 + "flood starting\n".len() as u64;
        let marker = truncation_marker(LOG_CAP, total - LOG_CAP);
        assert!(marker.contains("output truncated at 8388608 bytes"));
        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert!(outcome.truncated);
        assert_eq!(outcome.output_bytes, total);
        let size = std::fs::metadata(&log_path).unwrap().len();
        assert!(size <= LOG_CAP + marker.len() as u64, "log is {size} bytes");
        assert_eq!(outcome.log_bytes, size);
        let log = std::fs::read(&log_path).unwrap();
        assert!(
            log.ends_with(marker.as_bytes()),
            "marker missing at the end"
        );
        let text = String::from_utf8_lossy(&log);
        assert_eq!(text.matches("[loop-orchestrator:").count(), 1);
        assert!(
            outcome
                .summary
                .contains("output truncated at 8388608 bytes")
        );
    }

    #[tokio::test]
    async fn protocol_lines_are_parsed_even_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("protocol.sh")]);
        s.env = vec![("FLOOD_BYTES".into(), (1024 * 1024).to_string())];
        s.log_cap = 64 * 1024;
        let log_path = s.log_path.clone();
        let outcome = run_ok(s, CancellationToken::new()).await;

        assert!(outcome.truncated);
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            !log.contains("after the cap"),
            "the line should be past the cap"
        );

        assert_eq!(outcome.memory.len(), MAX_MEMORY_ENTRIES);
        assert_eq!(
            outcome.memory[0],
            ("Commands".to_owned(), "cargo test --quiet".to_owned())
        );
        assert_eq!(
            outcome.memory[1],
            (
                "Implementation Patterns".to_owned(),
                "signal the whole group with killpg".to_owned()
            )
        );
        assert_eq!(
            outcome.memory[2],
            ("System Updates".to_owned(), "entry 1".to_owned())
        );
        assert_eq!(outcome.memory[199].1, "entry 198");

        assert_eq!(outcome.handoff.len(), MAX_HANDOFF_LINES);
        assert_eq!(
            &outcome.handoff[..4],
            ["first note", "crlf line", "after the cap", "note 1"]
        );
        assert!(
            outcome
                .handoff
                .iter()
                .all(|h| h != "nope" && h != "from stderr")
        );
        assert!(
            !outcome.handoff.iter().any(|h| h.starts_with("yyy")),
            "overlong line parsed"
        );

        assert_eq!(
            outcome.blocked.as_deref(),
            Some("need credentials for the registry")
        );
        assert_eq!(outcome.status, RunStatus::Blocked);
        assert!(
            outcome
                .summary
                .contains("12 MEMORY lines over the limit of 200 dropped"),
            "{}",
            outcome.summary
        );
        assert!(
            outcome
                .summary
                .contains("13 HANDOFF lines over the limit of 50 dropped"),
            "{}",
            outcome.summary
        );
        assert!(outcome.summary.chars().count() <= 300);
        assert!(!outcome.summary.contains('\n'));
    }

    #[tokio::test]
    async fn blocked_with_exit_zero_is_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("protocol.sh")]);
        s.env = vec![("PROTOCOL".into(), "blocked-only".into())];
        let outcome = run_ok(s, CancellationToken::new()).await;

        assert_eq!(outcome.exit_code, Some(0));
        assert_eq!(outcome.status, RunStatus::Blocked);
        assert_eq!(
            outcome.summary,
            "blocked: waiting for a human review of the schema change"
        );
        assert_eq!(outcome.handoff, ["unterminated last line"]);
    }

    #[tokio::test]
    async fn failure_summary_names_exit_code_and_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec(dir.path(), &[&fixture("exit-with.sh"), "3"]);
        let log_path = s.log_path.clone();
        let outcome = run_ok(s, CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.summary, "exit 3: error: the build failed");
        let log = std::fs::read_to_string(log_path).unwrap();
        assert!(log.contains("some progress\n") && log.contains("error: the build failed\n"));

        let s = spec(dir.path(), &[&fixture("exit-with.sh"), "signal", "KILL"]);
        let outcome = run_ok(s, CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Failed);
        assert_eq!(outcome.exit_code, None);
        assert_eq!(outcome.signal, Some(Signal::SIGKILL as i32));
        assert_eq!(
            outcome.summary,
            "killed by SIGKILL: error: the build failed"
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
        let run_future = run(s, CancellationToken::new());
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

    #[tokio::test]
    async fn missing_program_bad_cwd_and_empty_argv_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-agent");
        let err = run(
            spec(dir.path(), &[missing.to_str().unwrap()]),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains(missing.to_str().unwrap()), "{message}");
        assert!(message.contains("no such program"), "{message}");

        let not_exec = dir.path().join("not-executable.sh");
        std::fs::write(&not_exec, "#!/bin/sh\nexit 0\n").unwrap();
        let message = run(
            spec(dir.path(), &[not_exec.to_str().unwrap()]),
            CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(message.contains("not-executable.sh"), "{message}");
        assert!(message.contains("permission denied"), "{message}");

        let mut s = spec(dir.path(), &[&fixture("exit-with.sh"), "0"]);
        s.cwd = dir.path().join("gone");
        let message = run(s, CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(message.contains("exit-with.sh"), "{message}");
        assert!(message.contains("gone does not exist"), "{message}");

        let err = run(spec(dir.path(), &[]), CancellationToken::new())
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::EmptyCommand));
    }

    #[tokio::test]
    async fn child_closing_stdin_on_a_large_prompt_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), &[&fixture("close-stdin.sh")]);
        s.prompt = PromptDelivery::Stdin;
        s.prompt_text = "prompt line\n".repeat(1024 * 1024 / 12 + 1);
        s.timeout = Duration::from_secs(30);
        let outcome = run_ok(s, CancellationToken::new()).await;
        assert_eq!(outcome.status, RunStatus::Ok, "{outcome:?}");
        assert_eq!(outcome.summary, "exit 0");
        assert!(outcome.duration < Duration::from_secs(20));
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

    #[test]
    fn protocol_lines_need_the_prefix_at_line_start() {
        assert_eq!(
            parse_protocol("  MEMORY Commands:  cargo fmt "),
            Some(Protocol::Memory {
                section: "Commands",
                text: "cargo fmt"
            })
        );
        assert_eq!(
            parse_protocol("\tHANDOFF: next"),
            Some(Protocol::Handoff("next"))
        );
        assert_eq!(parse_protocol("BLOCKED:"), Some(Protocol::Blocked("")));
        assert_eq!(parse_protocol("note: HANDOFF: x"), None);
        assert_eq!(parse_protocol("MEMORY Commands"), None);
        assert_eq!(parse_protocol("MEMORY : text"), None);
        assert_eq!(parse_protocol("HANDOFF:   "), None);
        assert_eq!(parse_protocol("handoff: lower case"), None);
    }

    #[test]
    fn line_splitter_caps_long_lines_and_keeps_the_tail() {
        let mut lines = LineSplitter::new(4);
        let mut seen = Vec::new();
        lines.feed(b"ab\r\ncdefgh\nij", |l, c| seen.push((l.to_vec(), c)));
        lines.feed(b"k", |l, c| seen.push((l.to_vec(), c)));
        lines.finish(|l, c| seen.push((l.to_vec(), c)));
        assert_eq!(
            seen,
            [
                (b"ab".to_vec(), true),
                (b"cdef".to_vec(), false),
                (b"ijk".to_vec(), true)
            ]
        );
    }

    #[test]
    fn clip_makes_one_short_line() {
        assert_eq!(clip("a\tb\nc", 300), "a b c");
        let long = "é".repeat(400);
        let clipped = clip(&long, 300);
        assert_eq!(clipped.chars().count(), 300);
        assert!(clipped.ends_with('…'));
    }

    #[test]
    fn an_agent_json_result_gives_the_cost_and_its_answer_carries_the_protocol() {
        let line = r#"{"type":"result","subtype":"success","is_error":false,"result":"Done.\nMEMORY Commands: cargo test -q\nHANDOFF: next: docs","total_cost_usd":0.0421,"num_turns":3}"#;
        let mut seen = Seen::default();
        seen.stdout_line(line.as_bytes(), true);
        assert_eq!(seen.cost_usd, Some(0.0421));
        assert_eq!(
            seen.memory,
            vec![("Commands".to_string(), "cargo test -q".to_string())]
        );
        assert_eq!(seen.handoff, vec!["next: docs".to_string()]);

        let older = r#"{"type":"result","result":"BLOCKED: no credentials","cost_usd":0.5}"#;
        let mut seen = Seen::default();
        seen.stdout_line(older.as_bytes(), true);
        assert_eq!(seen.cost_usd, Some(0.5));
        assert_eq!(seen.blocked.as_deref(), Some("no credentials"));

        // Other JSON lines, a result that is not one, a negative or missing cost: no cost.
        for line in [
            r#"{"type":"assistant","message":{"content":"MEMORY Commands: x"}}"#,
            r#"{"type":"result","result":"ok","total_cost_usd":-1}"#,
            r#"{"type":"result","result":"ok"}"#,
            r#"{"type": "result", "result": "#,
        ] {
            let mut seen = Seen::default();
            seen.stdout_line(line.as_bytes(), true);
            assert_eq!(seen.cost_usd, None, "{line}");
            assert!(seen.memory.is_empty(), "{line}");
        }
        // An overlong (cut) line is not read at all.
        let mut seen = Seen::default();
        seen.stdout_line(line.as_bytes(), false);
        assert_eq!(seen.cost_usd, None);
    }
}
