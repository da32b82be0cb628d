//! Starting the child: argv run directly in a process group of its own, and the prompt
//! delivered on stdin, in a file, or not at all (SPEC §3).
//!
//! Rules: argv never passes through a shell; the only substitution is a whole element
//! equal to [`PROMPT_FILE_PLACEHOLDER`]. The child leads its own process group and is
//! guarded from the moment it exists: if the run is dropped, the group is killed. The
//! supervisor's systemd channels and the cluster's database URL ([`SERVICE_ONLY_ENV`]) never
//! reach it.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Stdio;

use nix::errno::Errno;
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::stop::GroupGuard;
use super::{RunError, RunSpec};

/// Environment of the supervisor that its children never inherit: systemd's channels, and
/// the cluster's database URL (it may carry a password; SPEC §11).
pub const SERVICE_ONLY_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    // The cluster's `POSTGRES_ENV`, named here because the runner sits below the cluster
    // (a test in the cluster holds the two to the same name).
    "LOOP_ORCHESTRATOR_POSTGRES",
];
/// The one argv element that is replaced (whole) by the prompt file's path.
pub const PROMPT_FILE_PLACEHOLDER: &str = "{prompt_file}";

/// How the composed prompt reaches the child (`prompt = "stdin" | "file" | "none"` in a
/// mode's front matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptDelivery {
    /// Written to the child's stdin, which is then closed.
    Stdin,
    /// Written to `prompt_file`, whose path is in `LOOP_PROMPT_FILE`; stdin is /dev/null.
    File,
    /// Not delivered; stdin is /dev/null.
    None,
}

/// A child just started, its group guarded.
pub(super) struct Started {
    pub(super) child: Child,
    pub(super) pid: i32,
    pub(super) guard: GroupGuard,
    /// Writes the prompt to stdin; aborted when dropped, so it lives as long as the run.
    pub(super) prompt_writer: Option<AbortOnDrop>,
}

/// Whether the run needs the prompt in its file.
pub(super) fn wants_prompt_file(spec: &RunSpec) -> bool {
    spec.prompt == PromptDelivery::File
        || spec
            .argv
            .iter()
            .skip(1)
            .any(|a| a == PROMPT_FILE_PLACEHOLDER)
}

/// Writes the prompt file the child will read.
pub(super) fn write_prompt_file(path: &Path, text: &str) -> io::Result<()> {
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

/// Spawns `spec`'s argv (`program` is its first element) in a group of its own, records the
/// group when asked, and starts delivering the prompt. Takes the prompt text out of `spec`.
pub(super) fn start(
    spec: &mut RunSpec,
    program: &str,
    wants_file: bool,
) -> Result<Started, RunError> {
    let mut cmd = command(spec, program, wants_file);
    let spawn_error = |source: io::Error| RunError::Spawn {
        program: program.to_owned(),
        reason: spawn_reason(&source),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| spawn_error(io::Error::other("the child has no process id")))?;
    let record = spec.record.take().and_then(|(dir, label)| {
        match super::record::record(&dir, pid, label) {
            Ok(path) => Some(path),
            Err(error) => {
                tracing::warn!(pid, %error, "cannot write the pid record; a crash would leave this group unreaped");
                None
            }
        }
    });
    let guard = GroupGuard::new(Pid::from_raw(pid), record);
    tracing::info!(program = %program, pid, cwd = %spec.cwd.display(), "started child");

    let prompt_writer = match (spec.prompt, child.stdin.take()) {
        (PromptDelivery::Stdin, Some(mut stdin)) => {
            let bytes = std::mem::take(&mut spec.prompt_text).into_bytes();
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
    Ok(Started {
        child,
        pid,
        guard,
        prompt_writer,
    })
}

fn command(spec: &RunSpec, program: &str, wants_file: bool) -> Command {
    let prompt_file = &spec.prompt_file;
    let mut cmd = Command::new(program);
    cmd.args(spec.argv.iter().skip(1).map(|arg| {
        if arg == PROMPT_FILE_PLACEHOLDER {
            prompt_file.as_os_str()
        } else {
            OsStr::new(arg)
        }
    }))
    .current_dir(&spec.cwd)
    .stdin(if spec.prompt == PromptDelivery::Stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    // Reaps the leader if the run is dropped; GroupGuard handles the rest of the group.
    .kill_on_drop(true);
    // The supervisor's own systemd channels are not the child's: an agent must not be able to
    // report READY or feed the watchdog on the service's behalf.
    for var in SERVICE_ONLY_ENV {
        cmd.env_remove(var);
    }
    if spec.record.is_some() {
        // Marks the child and all it starts, so a later supervisor can find them even when
        // this one dies before the pid record is written.
        cmd.env("LOOP_SUPERVISOR", super::record::supervisor_tag());
    }
    if wants_file {
        cmd.env("LOOP_PROMPT_FILE", prompt_file);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
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

pub(super) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::testing::{find_named, fixture, run_ok, spec};
    use crate::runner::{RunStatus, run};
    use std::path::PathBuf;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

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
    async fn missing_program_bad_cwd_and_empty_argv_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-agent");
        let err = run(
            spec(dir.path(), &[missing.to_str().unwrap()]),
            &mut [],
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
            &mut [],
            CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(message.contains("not-executable.sh"), "{message}");
        assert!(message.contains("permission denied"), "{message}");

        let mut s = spec(dir.path(), &[&fixture("exit-with.sh"), "0"]);
        s.cwd = dir.path().join("gone");
        let message = run(s, &mut [], CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(message.contains("exit-with.sh"), "{message}");
        assert!(message.contains("gone does not exist"), "{message}");

        let err = run(spec(dir.path(), &[]), &mut [], CancellationToken::new())
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
}
