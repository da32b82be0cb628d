//! What every harness shares: the binary under test, the fake agent, instance files, /proc
//! sampling, process liveness, the token ledger and the token scan of the memory files.
//!
//! Rules: the harnesses run the real `loop-orchestrator` binary on a real directory and judge
//! only what it leaves behind (files, processes, its log); they never call into its internals
//! except the public readers of its file formats (`timing`, so a row is judged by the same
//! parser every tool uses).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loop_orchestrator::timing::{BadLine, Row, TimingFile};

/// The fake agent every harness mode runs. Driven by the mode's environment:
/// - `REL_LEDGER=dir`: one file per run, `<cycle>.<mode>.<attempt>.<pid>`, listing the
///   run's MEMORY tokens; written (one `printf`) *before* any token is printed, so every
///   token the supervisor can have read is in the ledger.
/// - `REL_TOKENS=min-max`: how many `MEMORY Commands: <token>` lines to print.
/// - `REL_PIDS=file`: start a grandchild (`sleep 600`) and append one line
///   `<cycle> <mode> <attempt> <pid> <grandchild pid>` (a short line: one atomic write).
/// - `REL_SLEEP_MS=min-max`: sleep a random time.
/// - `REL_FAIL_PCT=n`: exit 1 with a chance of n percent.
pub const AGENT: &str = r#"#!/usr/bin/env bash
# Fake agent of the reliability harness (written by the harness; see reliability/src/util.rs).
set -u
key="${LOOP_CYCLE_ID} ${LOOP_MODE} ${LOOP_ATTEMPT}"
range() { local lo=${1%-*} hi=${1#*-}; echo $(( lo + RANDOM % (hi - lo + 1) )); }
if [ -n "${REL_PIDS:-}" ]; then
  sleep 600 &
  echo "$key $$ $!" >> "$REL_PIDS"
fi
if [ -n "${REL_TOKENS:-}" ]; then
  n=$(range "$REL_TOKENS")
  ledger="" out=""
  for ((i = 0; i < n; i++)); do
    tok="tok-$$-${LOOP_CYCLE_ID}-${LOOP_MODE}-${LOOP_ATTEMPT}-$i"
    ledger+="$tok"$'\n'
    out+="MEMORY Commands: $tok"$'\n'
  done
  printf '%s' "$ledger" > "$REL_LEDGER/${LOOP_CYCLE_ID}.${LOOP_MODE}.${LOOP_ATTEMPT}.$$"
  printf '%s' "$out"
fi
if [ -n "${REL_SLEEP_MS:-}" ]; then
  ms=$(range "$REL_SLEEP_MS")
  sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
fi
if [ -n "${REL_FAIL_PCT:-}" ] && [ $((RANDOM % 100)) -lt "$REL_FAIL_PCT" ]; then
  echo "failing on purpose"
  exit 1
fi
echo "done"
"#;

pub type Res<T> = Result<T, String>;

/// The `loop-orchestrator` binary: `$LOOP_ORCHESTRATOR_BIN`, else next to this executable.
pub fn orchestrator_bin() -> Res<PathBuf> {
    if let Some(path) = std::env::var_os("LOOP_ORCHESTRATOR_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let bin = me
        .parent()
        .map(|d| d.join("loop-orchestrator"))
        .ok_or("this executable has no directory")?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it into the same target dir (`cargo build --release -p loop-orchestrator`) or set LOOP_ORCHESTRATOR_BIN",
            bin.display()
        ))
    }
}

/// A command of the binary under test on `dir`, with a clean environment for its logs.
pub fn orchestrator(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("LOOP_ORCHESTRATOR_DIR")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    command
}

/// Spawns with stdout and stderr appended to `log`.
pub fn spawn_logged(mut command: Command, log: &Path) -> Res<Child> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    command
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start the binary: {e}"))
}

pub fn write(path: &Path, text: &str) -> Res<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces `path` as editors do: a temp file in the same directory, then a rename over.
pub fn write_by_rename(path: &Path, text: &str) -> Res<()> {
    let tmp = path.with_extension("json.rel-new");
    write(&tmp, text)?;
    fs::rename(&tmp, path).map_err(|e| format!("rename over {}: {e}", path.display()))
}

pub fn write_agent(dir: &Path) -> Res<PathBuf> {
    let path = dir.join("agent.sh");
    write(&path, AGENT)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(path)
}

/// `modes/<slug>.md` with the given argv and extra front-matter lines.
pub fn write_mode(dir: &Path, slug: &str, argv: &[&str], extra: &str) -> Res<()> {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    let prompt = if extra.contains("prompt =") {
        ""
    } else {
        "prompt = \"none\"\n"
    };
    write(
        &dir.join("modes").join(format!("{slug}.md")),
        &format!(
            "+++\ncommand = [{}]\n{prompt}{extra}\n+++\n# {slug}\nA mode of the reliability harness.\n",
            argv.join(", ")
        ),
    )
}

// ---------------------------------------------------------------- /proc

fn status_kb(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Fields after the command name of `/proc/<pid>/stat` (field 3, the state, is index 0).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Start time in clock ticks since boot (stat field 22).
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Whether `pid` runs and is the process that started at `start` (when given). A zombie or a
/// dead process is not alive.
pub fn alive(pid: i32, start: Option<u64>) -> bool {
    let Some(fields) = stat_fields(pid) else {
        return false;
    };
    let state = fields.first().map_or("X", String::as_str);
    if state == "Z" || state == "X" {
        return false;
    }
    match start {
        Some(start) => fields.get(19).and_then(|s| s.parse().ok()) == Some(start),
        None => true,
    }
}

/// Children of `pid` (any state but zombie).
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            stat_fields(p).is_some_and(|f| {
                f.first().is_some_and(|s| s != "Z")
                    && f.get(1).and_then(|s| s.parse().ok()) == Some(pid)
            })
        })
        .collect()
}

/// One look at a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub rss_kb: u64,
    /// The parts of `rss_kb`: anonymous memory (the heap, stacks) and mapped files (the
    /// binary's pages as code paths are first used).
    pub anon_kb: u64,
    pub file_kb: u64,
    pub hwm_kb: u64,
    pub fds: usize,
    pub threads: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
}

pub fn sample(pid: i32, at: Duration) -> Option<Sample> {
    let fields = stat_fields(pid)?;
    let cpu = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Sample {
        at,
        rss_kb: status_kb(pid, "VmRSS")?,
        anon_kb: status_kb(pid, "RssAnon")?,
        file_kb: status_kb(pid, "RssFile")?,
        hwm_kb: status_kb(pid, "VmHWM")?,
        fds: fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count(),
        threads: status_kb(pid, "Threads")?,
        cpu_ticks: cpu,
    })
}

pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t as u64)
}

pub fn median(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub fn killpg(pgid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
}

/// Waits for a child to exit, up to `limit`; `None` when it still runs.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops ANSI colour sequences (the service colours its plain log even into a file).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- tokens

/// The key of one mode run: (cycle, mode, attempt).
pub type RunKey = (String, String, u32);

/// The ledger directory: every run's tokens, by run.
pub fn read_ledger(dir: &Path) -> HashMap<RunKey, Vec<String>> {
    let mut runs: HashMap<RunKey, Vec<String>> = HashMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return runs;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(key) = ledger_key(&name) else {
            continue;
        };
        let text = read_lossy(&entry.path());
        runs.entry(key)
            .or_default()
            .extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    runs
}

/// `<cycle>.<mode>.<attempt>.<pid>`; the cycle id holds dots (milliseconds), so split from
/// the right.
fn ledger_key(name: &str) -> Option<RunKey> {
    let mut parts = name.rsplitn(4, '.');
    let _pid = parts.next()?;
    let attempt = parts.next()?.parse().ok()?;
    let mode = parts.next()?.to_string();
    let cycle = parts.next()?.to_string();
    Some((cycle, mode, attempt))
}

/// Tokens held as entries (`- tok-…` lines) of a memory or archive text.
pub fn entry_tokens(text: &str, into: &mut HashSet<String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("- tok-") {
            let token = rest.trim_end();
            if !token.contains(char::is_whitespace) {
                into.insert(format!("tok-{token}"));
            }
        }
    }
}

/// The archive is append-only: scan only what was added since the last look.
#[derive(Default)]
pub struct ArchiveScan {
    offset: u64,
    pub tokens: HashSet<String>,
    pub shrank: bool,
}

impl ArchiveScan {
    pub fn update(&mut self, path: &Path) {
        let Ok(mut file) = fs::File::open(path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.shrank = true;
            self.offset = 0;
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        // Only complete lines: a torn tail is read again once it is terminated.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        entry_tokens(
            &String::from_utf8_lossy(&bytes[..complete]),
            &mut self.tokens,
        );
        self.offset += complete as u64;
    }
}

pub fn memory_tokens(dir: &Path) -> HashSet<String> {
    let mut tokens = HashSet::new();
    entry_tokens(&read_lossy(&dir.join("persistent-memory.md")), &mut tokens);
    tokens
}

// ---------------------------------------------------------------- timing

pub struct Timing {
    pub rows: Vec<Row>,
    pub bad_lines: Vec<BadLine>,
    /// Whether the file ends without a newline (a torn tail).
    pub torn_tail: bool,
    pub lines: usize,
}

pub fn read_timing(dir: &Path) -> Res<Timing> {
    let path = dir.join("task_timing.tsv");
    let log = TimingFile::new(&path)
        .read()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = fs::read(&path).unwrap_or_default();
    Ok(Timing {
        rows: log.rows,
        bad_lines: log.bad_lines,
        torn_tail: !bytes.is_empty() && bytes.last() != Some(&b'\n'),
        lines: bytes.iter().filter(|&&b| b == b'\n').count(),
    })
}

/// Rows whose (cycle, mode, attempt) appears more than once.
pub fn doubled_rows(rows: &[Row]) -> Vec<RunKey> {
    let mut seen = HashSet::new();
    let mut doubled = Vec::new();
    for row in rows {
        let key = (row.cycle.clone(), row.mode.clone(), row.attempt);
        if !seen.insert(key.clone()) {
            doubled.push(key);
        }
    }
    doubled
}

// ---------------------------------------------------------------- report

/// A summary table: check, figure, verdict.
#[derive(Default)]
pub struct Report {
    lines: Vec<(String, String, Option<bool>)>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn info(&mut self, name: &str, value: impl ToString) {
        self.lines.push((name.to_string(), value.to_string(), None));
    }

    pub fn check(&mut self, name: &str, value: impl ToString, ok: bool) {
        let value = value.to_string();
        if !ok {
            self.violations.push(format!("{name}: {value}"));
        }
        self.lines.push((name.to_string(), value, Some(ok)));
    }

    pub fn print(&self, title: &str) {
        println!("\n== {title} ==");
        let width = self.lines.iter().map(|l| l.0.len()).max().unwrap_or(10);
        for (name, value, ok) in &self.lines {
            let verdict = match ok {
                Some(true) => "ok  ",
                Some(false) => "FAIL",
                None => "    ",
            };
            println!("{verdict} {name:<width$}  {value}");
        }
        if self.violations.is_empty() {
            println!("RESULT: no violation");
        } else {
            println!("RESULT: {} violation(s)", self.violations.len());
            for v in &self.violations {
                println!("  - {v}");
            }
        }
    }
}

/// A temp directory for an instance, kept (and named) when `REL_KEEP` is set.
pub fn instance_dir(label: &str) -> Res<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("rel-{label}-"))
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    Ok(dir)
}

/// Keeps the directory on disk when `REL_KEEP` is set (for a post-mortem), and says where.
/// Removes the instance, unless `REL_KEEP` is set or `keep` (a run with a violation keeps
/// its instance, so the violation can be examined afterwards).
pub fn finish_dir(dir: tempfile::TempDir, keep: bool) {
    if keep || std::env::var_os("REL_KEEP").is_some() {
        let path = dir.keep();
        println!("kept the instance at {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_names_split_from_the_right_because_cycle_ids_hold_dots() {
        assert_eq!(
            ledger_key("20261121T110806.381Z-burst-a.burst2.1.4242"),
            Some(("20261121T110806.381Z-burst-a".into(), "burst2".into(), 1))
        );
        assert_eq!(ledger_key("no-dots"), None);
    }

    #[test]
    fn tokens_count_only_as_whole_entries_not_inside_notes() {
        let mut found = HashSet::new();
        entry_tokens(
            "## Commands\n- tok-1-a\n- 2026-11-21T10:00:00Z [s/m] ok: last line MEMORY Commands: tok-2-b\n  - tok-3-c\n",
            &mut found,
        );
        assert_eq!(found, HashSet::from(["tok-1-a".to_string()]));
    }

    #[test]
    fn archive_scan_reads_only_complete_lines_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.md");
        fs::write(&path, "# Archive\n- tok-a\n- tok-b").unwrap();
        let mut scan = ArchiveScan::default();
        scan.update(&path);
        assert_eq!(scan.tokens, HashSet::from(["tok-a".to_string()]));
        fs::write(&path, "# Archive\n- tok-a\n- tok-b\n- tok-c\n").unwrap();
        scan.update(&path);
        assert_eq!(scan.tokens.len(), 3);
        assert!(!scan.shrank);
    }

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m x"), " WARN x");
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let start = start_time(me);
        assert!(alive(me, start));
        assert!(!alive(me, start.map(|s| s + 1)));
    }
}
