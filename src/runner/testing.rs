//! Helpers for the tests that run real children through [`run`]: the fixture scripts of
//! `tests/fixtures/`, a spec in a temporary directory, bounded waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

use super::proc::running;
use super::{LOG_CAP, LineSink, PromptDelivery, RunOutcome, RunSpec, run};

/// No run in a test takes longer; a hang fails instead of blocking the suite.
const RUN_BOUND: Duration = Duration::from_secs(120);

pub(crate) fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Runs `argv` in `dir`, with its prompt file and log under it.
pub(crate) fn spec(dir: &Path, argv: &[&str]) -> RunSpec {
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

/// Runs `spec` without sinks; it must start and end within [`RUN_BOUND`].
pub(crate) async fn run_ok(spec: RunSpec, cancel: CancellationToken) -> RunOutcome {
    run_with(spec, &mut [], cancel).await
}

/// Runs `spec` with `sinks`; it must start and end within [`RUN_BOUND`].
pub(crate) async fn run_with(
    spec: RunSpec,
    sinks: &mut [&mut dyn LineSink],
    cancel: CancellationToken,
) -> RunOutcome {
    tokio::time::timeout(RUN_BOUND, run(spec, sinks, cancel))
        .await
        .expect("run did not finish in time")
        .expect("child could not be started")
}

/// Waits for the fixture's "<leader pid> <grandchild pid>" file.
pub(crate) async fn read_pids(path: &Path) -> (i32, i32) {
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

/// Killed processes that init must reap may linger as zombies a little while.
pub(crate) async fn assert_gone(pid: i32, what: &str) {
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

/// Paths under `dir` whose name starts with `prefix`.
pub(crate) fn find_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
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
