//! The one small builder every integration test uses: a temp instance directory, the real
//! binary, and readers for the files it leaves behind.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_loop-orchestrator");

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

pub struct Instance {
    pub dir: tempfile::TempDir,
}

impl Instance {
    /// An instance with the given schedules (JSON array text) and no modes yet.
    pub fn new(schedules: &str) -> Instance {
        let instance = Instance {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        instance.write(
            "schedules.json",
            &format!(
                r#"{{
  "version": 1,
  "timezone": "UTC",
  "memory": {{ "max_lines": 300, "target_lines": 240 }},
  "schedules": {schedules}
}}
"#
            ),
        );
        instance
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    /// A mode running `argv` (TOML array text) with extra front-matter lines.
    pub fn mode(&self, slug: &str, argv: &str, extra: &str) {
        self.write(
            &format!("modes/{slug}.md"),
            &format!("+++\ncommand = {argv}\n{extra}\n+++\n# {slug}\nInstructions of {slug}.\n"),
        );
    }

    /// A mode running the fake agent with the given environment (TOML inline-table body).
    pub fn agent_mode(&self, slug: &str, env: &str, extra: &str) {
        self.mode(
            slug,
            &format!("[\"{}\"]", fixture("agent.sh")),
            &format!("env = {{ {env} }}\n{extra}"),
        );
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.arg("--dir").arg(self.path()).args(args);
        command
            .env_remove("LOOP_ORCHESTRATOR_DIR")
            .env_remove("RUST_LOG");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// The rows of task_timing.tsv as cells, header excluded; panics on a line that is not 13 cells.
    pub fn rows(&self) -> Vec<Vec<String>> {
        let text = self.read("task_timing.tsv");
        let mut lines = text.lines();
        if let Some(header) = lines.next() {
            assert_eq!(header, HEADER, "header line");
        }
        lines
            .map(|line| {
                let cells: Vec<String> = line.split('\t').map(str::to_string).collect();
                assert_eq!(cells.len(), 13, "row with {} cells: {line:?}", cells.len());
                cells
            })
            .collect()
    }

    /// (mode, status) of every row, in file order.
    pub fn mode_statuses(&self) -> Vec<(String, String)> {
        self.rows()
            .into_iter()
            .map(|r| (r[7].clone(), r[9].clone()))
            .collect()
    }
}

pub const HEADER: &str = "scheduled_at\tstarted_at\tfinished_at\tduration_ms\tpriority\tschedule\tcycle\tmode\tattempt\tstatus\texit_code\tcost_usd\tnote";

pub fn text(output: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn process_exists(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still counts, so look at /proc's state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn path_buf(p: &Path) -> PathBuf {
    p.to_path_buf()
}

/// A bound datagram socket standing in for systemd's notify socket.
pub struct NotifyListener {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl NotifyListener {
    /// Binds `dir/notify.sock`; give it a fresh temporary directory (socket paths are
    /// limited to about 100 bytes).
    pub fn bind_in(dir: &Path) -> std::io::Result<NotifyListener> {
        let path = dir.join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path)?;
        Ok(NotifyListener { socket, path })
    }

    /// The value to put in `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram, or `None` when none arrives within `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<String> {
        // A zero timeout means "block forever" to set_read_timeout.
        let timeout = timeout.max(std::time::Duration::from_millis(1));
        self.socket.set_read_timeout(Some(timeout)).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a test may skip for a missing tool (`why`), said on stderr: not under
/// `LOOP_TEST_REQUIRE_ALL` (CI installs every tool), where a missing one fails the test.
pub fn skip(why: &str) -> bool {
    if std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    true
}

/// Polls `check` every 20 ms until it holds; fails the test naming `what` after `limit`.
pub fn wait_until(limit: std::time::Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `program --version` runs.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}
