//! One mode's child process, from spawn to the last byte of output (SPEC §3).
//!
//! The runner knows nothing of cycles, schedules, configuration or what the output means:
//! the caller hands it a [`RunSpec`] and the [`LineSink`]s that read the output, and gets
//! back a [`RunOutcome`]. Its rules:
//!
//! - argv is run directly, never through a shell. The only substitution is a whole
//!   element equal to `{prompt_file}`, replaced by the prompt file's path (`spawn.rs`).
//! - The child leads its own process group. Every signal goes to the whole group, and
//!   when the run ends — normally, by timeout, by cancellation, or because the future
//!   was dropped — no member of the group is left running (`stop.rs`).
//! - Stopping is a small state machine: SIGTERM to the group, `kill_grace` for the
//!   leader to exit, then SIGKILL. After the leader exits (for any reason) stray group
//!   members get SIGTERM, a short grace, then SIGKILL. A group of zombies is gone
//!   ([`group_alive`]).
//! - stdout and stderr go to one log, interleaved as they arrive, capped at `log_cap`
//!   bytes plus one truncation marker (`log.rs`). Reading never stops, so the child is never
//!   blocked on a full pipe, and memory stays bounded (fixed buffers, capped lines).
//! - Every output line goes to the run's sinks, even past the log cap (`lines.rs`). A sink
//!   may say the child is blocked, which makes the run [`RunStatus::Blocked`], and add
//!   notes to the summary; the summary is otherwise about the process (`summary.rs`).
//!
//! Limits: a descendant that leaves the process group (`setsid`, `setpgid`) escapes the
//! group signals; if it holds an output pipe open, draining stops [`DRAIN_LIMIT`] after
//! the group is gone and the summary says so.

mod lines;
mod log;
pub mod proc;
pub mod record;
mod spawn;
mod stop;
mod summary;
#[cfg(test)]
pub(crate) mod testing;

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use lines::{DEFAULT_LINE_LIMIT, LineSink, Stream};
pub use log::truncation_marker;
pub use proc::group_alive;
pub use spawn::{PROMPT_FILE_PLACEHOLDER, PromptDelivery, SERVICE_ONLY_ENV};
pub use stop::{DRAIN_LIMIT, STRAY_GRACE};

/// Default cap on the bytes of output kept in a run's log.
pub const LOG_CAP: u64 = 8 * 1024 * 1024;

const READ_CHUNK: usize = 64 * 1024;

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
    /// Written when `prompt` is `File` or argv contains `{prompt_file}`; its path is then
    /// also exported as `LOOP_PROMPT_FILE` unless `env` sets it.
    pub prompt_file: PathBuf,
    pub timeout: Duration,
    pub kill_grace: Duration,
    /// Created (truncated if present), with its parent directories.
    pub log_path: PathBuf,
    /// Bytes of output kept in the log; see [`LOG_CAP`]. Also the longest line a sink
    /// can ask for (never less than [`DEFAULT_LINE_LIMIT`]).
    pub log_cap: u64,
    /// Where to keep a pid record of the group while it runs (instance directory and what
    /// the group is doing), so that a later supervisor can reap it if this one dies.
    pub record: Option<(PathBuf, record::Label)>,
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

/// What a run produced. What the output said is in the caller's sinks.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    /// The signal that ended the leader, whoever sent it.
    pub signal: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration: Duration,
    /// Size of the log file, truncation marker included.
    pub log_bytes: u64,
    /// Bytes the child wrote to stdout and stderr, kept or not.
    pub output_bytes: u64,
    pub truncated: bool,
    /// One line (at most 300 characters) for the TSV note.
    pub summary: String,
    /// The summary's notes without how the run ended (`; output truncated at …`, each after
    /// `; `), for a caller that words the ending itself (an agent's own error text).
    pub summary_notes: String,
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

/// Runs one child to completion, handing every output line to `sinks` (in order), which
/// the caller reads afterwards. `Err` only when the child cannot be started.
pub async fn run(
    mut spec: RunSpec,
    sinks: &mut [&mut dyn LineSink],
    cancel: CancellationToken,
) -> Result<RunOutcome, RunError> {
    let program = spec.argv.first().cloned().ok_or(RunError::EmptyCommand)?;
    if !spec.cwd.is_dir() {
        return Err(RunError::Cwd {
            program,
            cwd: spec.cwd,
        });
    }
    let wants_file = spawn::wants_prompt_file(&spec);
    if wants_file {
        spawn::write_prompt_file(&spec.prompt_file, &spec.prompt_text).map_err(|source| {
            RunError::PromptFile {
                program: program.clone(),
                path: spec.prompt_file.clone(),
                source,
            }
        })?;
    }
    let mut log =
        log::CappedLog::create(&spec.log_path, spec.log_cap).map_err(|source| RunError::Log {
            program: program.clone(),
            path: spec.log_path.clone(),
            source,
        })?;

    let started_at = Utc::now();
    let start = Instant::now();
    let spawn::Started {
        mut child,
        pid,
        guard,
        prompt_writer: _prompt_writer,
    } = spawn::start(&mut spec, &program, wants_file)?;

    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let ceiling = usize::try_from(spec.log_cap)
        .unwrap_or(usize::MAX)
        .max(DEFAULT_LINE_LIMIT);
    let mut lines = lines::Lines::new(&mut *sinks, ceiling);
    let mut stop = stop::StopMachine::new(guard, start, spec.timeout, spec.kill_grace);

    loop {
        if stop.draining() && stdout.is_none() && stderr.is_none() {
            break;
        }
        let wake = stop.wake_at();
        let leader_running = stop.leader_running();
        tokio::select! {
            status = child.wait(), if leader_running => stop.leader_waited(status, &cancel),
            () = cancel.cancelled(), if stop.running() => stop.cancelled(&mut child, &cancel),
            () = tokio::time::sleep_until(wake) => {
                if stop.wake(&mut child, &cancel).is_break() {
                    break;
                }
            }
            read = read_some(&mut stdout, &mut out_buf) => {
                read_output(pid, Stream::Stdout, read, &out_buf, &mut stdout, &mut log, &mut lines);
            }
            read = read_some(&mut stderr, &mut err_buf) => {
                read_output(pid, Stream::Stderr, read, &err_buf, &mut stderr, &mut log, &mut lines);
            }
        }
    }
    // Pipes still held by an escaped process are closed here; the run is over.
    drop(stdout);
    drop(stderr);
    let finished_at = Utc::now();
    let duration = start.elapsed();
    let log = log.finish();
    let end = stop.finish();

    let last_line = lines.last_line().map(str::to_owned);
    let blocked = sinks.iter().find_map(|sink| sink.blocked());
    let status = end.status(blocked.is_some());
    let said = summary::Said {
        last_line: last_line.as_deref(),
        blocked,
        notes: sinks.iter().flat_map(|sink| sink.notes()).collect(),
    };
    let limits = summary::Limits {
        timeout: spec.timeout,
        kill_grace: spec.kill_grace,
        log_cap: spec.log_cap,
    };
    let (summary, summary_notes) = summary::summary(&end, status, &said, &log, &limits);
    tracing::info!(pid, status = status.as_str(), ?duration, "child finished");

    Ok(RunOutcome {
        status,
        exit_code: end.exit.and_then(|s| s.code()),
        signal: end.exit.and_then(|s| s.signal()),
        started_at,
        finished_at,
        duration,
        log_bytes: log.bytes,
        output_bytes: log.output_bytes,
        truncated: log.truncated,
        summary,
        summary_notes,
    })
}

/// What a read of `stream` gave: output for the log and the sinks, or its end.
fn read_output<R>(
    pid: i32,
    stream: Stream,
    read: io::Result<usize>,
    buf: &[u8],
    pipe: &mut Option<R>,
    log: &mut log::CappedLog,
    lines: &mut lines::Lines<'_, '_>,
) {
    match read {
        Ok(n) if n > 0 => {
            log.write(&buf[..n]);
            lines.feed(stream, &buf[..n]);
        }
        other => {
            match (other, stream) {
                (Err(error), Stream::Stdout) => {
                    tracing::warn!(pid, %error, "reading the child's stdout failed");
                }
                (Err(error), Stream::Stderr) => {
                    tracing::warn!(pid, %error, "reading the child's stderr failed");
                }
                _ => {}
            }
            *pipe = None;
            lines.finish(stream);
        }
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
