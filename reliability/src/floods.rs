//! `floods`: hostile modes and a full disk, each against the real binary.
//!
//! (a) a mode writing 1 GiB to stdout (one endless line of NULs; and 1 GiB of short lines
//!     followed by a MEMORY line), under `run-cycle` and under `serve`: both stay up, each
//!     log is capped at 8 MiB plus the truncation marker, the MEMORY line after the flood is
//!     still read, and the supervisor's peak RSS (VmHWM) stays small;
//! (b) a prompt of 2 MiB on stdin to a mode that closes stdin at once, one that never reads
//!     it, and one that reads it all: no hang, no crash, the reader gets every byte;
//! (c) a mode that forks 200 background children and exits; one whose 200 children ignore
//!     SIGTERM; and one child that leaves the group with `setsid` (a documented limit):
//!     after `run-cycle` returns, no child of the group survives;
//! (d) the instance on a full filesystem (a 2 MiB tmpfs; `RLIMIT_FSIZE` through `prlimit`
//!     where mounting is refused): a mode whose log fills it, then `serve` firing every
//!     second while the disk is full and after it is freed: the service stays up, logs a
//!     clear error, does not spin, keeps its memory bounded, and recovers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::util::{self, Report, Res};

const MIB: u64 = 1024 * 1024;
const LOG_CAP: u64 = 8 * MIB;
/// Peak RSS a supervisor may reach while a mode floods it.
const HWM_LIMIT_KB: u64 = 64 * 1024;

fn schedules(list: Value, extra: Value) -> String {
    let mut doc = json!({
        "version": 1,
        "timezone": "UTC",
        "defaults": { "timeout": "5m", "max_failures": 1_000_000 },
        "memory": { "max_lines": 300, "target_lines": 240 },
        "shutdown_grace": "3s",
        "schedules": list,
    });
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            doc.insert(k.clone(), v.clone());
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Runs a command to its end, sampling its peak RSS; returns (exit, VmHWM kB, duration).
fn run_sampled(
    mut command: Command,
    log: &Path,
    limit: Duration,
) -> Res<(Option<ExitStatus>, u64, Duration)> {
    let started = Instant::now();
    let mut child = util::spawn_logged(
        {
            command.stdin(std::process::Stdio::null());
            command
        },
        log,
    )?;
    let pid = child.id() as i32;
    let mut hwm = 0;
    let status = loop {
        if let Some(s) = util::sample(pid, started.elapsed()) {
            hwm = hwm.max(s.hwm_kb);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > limit {
            util::signal(pid, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok((status, hwm, started.elapsed()))
}

fn latest_run_dir(dir: &Path, schedule: &str) -> Option<PathBuf> {
    let mut runs: Vec<PathBuf> = fs::read_dir(dir.join(".loop-orchestrator/runs"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(schedule))
        })
        .collect();
    runs.sort();
    runs.pop()
}

fn tail(path: &Path, n: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(n as usize);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}

fn rows_of(dir: &Path, schedule: &str) -> Vec<loop_orchestrator::timing::Row> {
    util::read_timing(dir)
        .map(|t| {
            t.rows
                .into_iter()
                .filter(|r| r.schedule == schedule)
                .collect()
        })
        .unwrap_or_default()
}

fn row_summary(dir: &Path, schedule: &str) -> String {
    rows_of(dir, schedule)
        .iter()
        .map(|r| {
            format!(
                "{}={} ({})",
                r.mode,
                r.status,
                r.note.chars().take(90).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn run(only: Option<String>) -> Res<bool> {
    let bin = util::orchestrator_bin()?;
    let want = |c: &str| only.as_deref().is_none_or(|o| o.contains(c));
    let mut all_ok = true;
    if want("a") {
        all_ok &= flood_stdout(&bin)?;
    }
    if want("b") {
        all_ok &= stdin_closed(&bin)?;
    }
    if want("c") {
        all_ok &= fork_children(&bin)?;
    }
    if want("d") {
        all_ok &= full_disk(&bin)?;
    }
    Ok(all_ok)
}

// ---------------------------------------------------------------- (a)

fn flood_stdout(bin: &Path) -> Res<bool> {
    let tmp = util::instance_dir("flood")?;
    let dir = tmp.path();
    util::write_mode(
        dir,
        "flood-zero",
        &["bash", "-c", "head -c 1G /dev/zero"],
        "",
    )?;
    util::write_mode(
        dir,
        "flood-lines",
        &[
            "bash",
            "-c",
            "yes 'a line of flood output' | head -c 1G; echo; echo 'MEMORY Commands: tok-after-flood'",
        ],
        "on_failure = \"continue\"",
    )?;
    util::write(
        &dir.join("schedules.json"),
        &schedules(
            json!([{ "id": "flood", "task": "flood", "cron": "*/10 * * * * *", "modes": ["flood-zero", "flood-lines"] }]),
            json!({}),
        ),
    )?;
    let log = dir.join("run.log");
    let mut r = Report::default();
    let (status, hwm, took) = run_sampled(
        util::orchestrator(bin, dir, &["run-cycle", "--schedule", "flood"]),
        &log,
        Duration::from_secs(600),
    )?;
    r.check(
        "run-cycle: exit",
        format!("{status:?} after {:.1} s", took.as_secs_f64()),
        status.is_some_and(|s| s.code() == Some(0)),
    );
    r.check(
        "run-cycle: peak RSS (VmHWM) while 2 GiB passed through",
        format!("{hwm} kB (limit {HWM_LIMIT_KB})"),
        hwm > 0 && hwm < HWM_LIMIT_KB,
    );
    let run = latest_run_dir(dir, "flood").ok_or("no run directory")?;
    for mode in ["flood-zero", "flood-lines"] {
        let path = run.join(format!("{mode}.log"));
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let end = tail(&path, 200);
        let marker = end.contains("output truncated at 8388608 bytes");
        r.check(
            &format!("run-cycle: {mode}.log capped"),
            format!(
                "{size} bytes; marker: {:?}",
                end.trim().lines().last().unwrap_or("")
            ),
            (LOG_CAP..LOG_CAP + 512).contains(&size) && marker,
        );
    }
    let kept = util::memory_tokens(dir).contains("tok-after-flood");
    r.check(
        "run-cycle: MEMORY line after 1 GiB of lines kept",
        kept,
        kept,
    );
    r.info("run-cycle: rows", row_summary(dir, "flood"));

    // The same under the service.
    let rows_before = rows_of(dir, "flood").len();
    let mut serve = util::spawn_logged(util::orchestrator(bin, dir, &["serve"]), &log)?;
    let pid = serve.id() as i32;
    let mut hwm = 0;
    let started = Instant::now();
    let fired = loop {
        if let Some(s) = util::sample(pid, started.elapsed()) {
            hwm = hwm.max(s.hwm_kb);
        }
        let rows = rows_of(dir, "flood");
        if rows.len() > rows_before && rows.iter().skip(rows_before).any(|r| r.mode == "cycle") {
            break true;
        }
        if started.elapsed() > Duration::from_secs(300) || matches!(serve.try_wait(), Ok(Some(_))) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let up = util::alive(pid, None);
    util::signal(pid, Signal::SIGTERM);
    let exit = util::wait_timeout(&mut serve, Duration::from_secs(60));
    r.check("serve: a flood cycle ran and ended", fired, fired);
    r.check("serve: still up after the flood cycle", up, up);
    r.check(
        "serve: peak RSS (VmHWM)",
        format!("{hwm} kB (limit {HWM_LIMIT_KB})"),
        hwm > 0 && hwm < HWM_LIMIT_KB,
    );
    r.check(
        "serve: exit after SIGTERM",
        format!("{exit:?}"),
        exit.is_some_and(|s| s.code() == Some(0)),
    );
    if let Some(run) = latest_run_dir(dir, "flood") {
        let sizes: Vec<String> = ["flood-zero", "flood-lines"]
            .iter()
            .map(|m| {
                format!(
                    "{m}.log {} bytes",
                    fs::metadata(run.join(format!("{m}.log")))
                        .map(|m| m.len())
                        .unwrap_or(0)
                )
            })
            .collect();
        r.info("serve: logs of its last flood cycle", sizes.join(", "));
    }
    r.print("floods (a): 1 GiB to stdout");
    util::finish_dir(tmp, !r.violations.is_empty());
    Ok(r.violations.is_empty())
}

// ---------------------------------------------------------------- (b)

fn stdin_closed(bin: &Path) -> Res<bool> {
    let tmp = util::instance_dir("stdin")?;
    let dir = tmp.path();
    let extra = "prompt = \"stdin\"\non_failure = \"continue\"\ntimeout = \"60s\"";
    util::write_mode(
        dir,
        "closes-stdin",
        &[
            "bash",
            "-c",
            "exec 0<&-; sleep 0.3; echo 'MEMORY Commands: tok-closed-stdin'; echo done",
        ],
        extra,
    )?;
    util::write_mode(
        dir,
        "ignores-stdin",
        &[
            "bash",
            "-c",
            "sleep 1; echo 'MEMORY Commands: tok-ignored-stdin'; echo done",
        ],
        extra,
    )?;
    util::write_mode(
        dir,
        "reads-stdin",
        &["bash", "-c", "echo \"read $(wc -c) bytes\""],
        extra,
    )?;
    let task = "x".repeat(2 * MIB as usize);
    util::write(
        &dir.join("schedules.json"),
        &schedules(
            json!([{ "id": "stdin", "task": task, "cron": "0 0 * * * *", "modes": ["closes-stdin", "ignores-stdin", "reads-stdin"] }]),
            json!({}),
        ),
    )?;
    let log = dir.join("run.log");
    let (status, hwm, took) = run_sampled(
        util::orchestrator(bin, dir, &["run-cycle", "--schedule", "stdin"]),
        &log,
        Duration::from_secs(120),
    )?;
    let mut r = Report::default();
    if status.is_some_and(|s| s.code() == Some(2)) {
        r.info(
            "run-cycle output",
            util::read_lossy(&log).chars().take(300).collect::<String>(),
        );
    }
    r.check(
        "run-cycle: exit, duration",
        format!("{status:?} after {:.1} s", took.as_secs_f64()),
        status.is_some_and(|s| s.code() == Some(0)) && took < Duration::from_secs(30),
    );
    r.info("run-cycle: VmHWM", format!("{hwm} kB"));
    let memory = util::memory_tokens(dir);
    for token in ["tok-closed-stdin", "tok-ignored-stdin"] {
        r.check(
            &format!("{token} kept"),
            memory.contains(token),
            memory.contains(token),
        );
    }
    let rows = rows_of(dir, "stdin");
    let statuses: Vec<String> = rows
        .iter()
        .map(|r| format!("{}={}", r.mode, r.status))
        .collect();
    r.check(
        "every mode ok",
        statuses.join(", "),
        rows.iter()
            .all(|r| r.status == loop_orchestrator::timing::Status::Ok),
    );
    for row in &rows {
        r.info(
            &format!("note of {}", row.mode),
            row.note.chars().take(160).collect::<String>(),
        );
    }
    let prompt_len = latest_run_dir(dir, "stdin")
        .and_then(|run| fs::metadata(run.join("reads-stdin.prompt.md")).ok())
        .map(|m| m.len());
    let read = latest_run_dir(dir, "stdin")
        .map(|run| util::read_lossy(&run.join("reads-stdin.log")))
        .unwrap_or_default();
    let read_bytes: Option<u64> = read.split_whitespace().nth(1).and_then(|n| n.parse().ok());
    r.check(
        "reads-stdin got the whole prompt",
        format!("read {read_bytes:?} bytes; prompt file {prompt_len:?} bytes"),
        read_bytes.is_some_and(|n| n > 2 * MIB),
    );
    r.print("floods (b): 2 MiB prompt, stdin closed / never read / read");
    util::finish_dir(tmp, !r.violations.is_empty());
    Ok(r.violations.is_empty())
}

// ---------------------------------------------------------------- (c)

fn fork_children(bin: &Path) -> Res<bool> {
    let tmp = util::instance_dir("fork")?;
    let dir = tmp.path();
    let pids = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let extra = "on_failure = \"continue\"\nkill_grace = \"2s\"";
    util::write_mode(
        dir,
        "fork200",
        &[
            "bash",
            "-c",
            &format!(
                "for i in $(seq 200); do sleep 300 & echo $! >> {:?}; done; echo spawned; exit 0",
                pids("fork200.pids")
            ),
        ],
        extra,
    )?;
    util::write_mode(
        dir,
        "fork200-ignore-term",
        &[
            "bash",
            "-c",
            &format!(
                "for i in $(seq 200); do ( trap '' TERM; exec sleep 300 ) & echo $! >> {:?}; done; echo spawned; exit 0",
                pids("ignore.pids")
            ),
        ],
        extra,
    )?;
    util::write_mode(
        dir,
        "escape-setsid",
        &[
            "bash",
            "-c",
            &format!(
                "setsid sleep 300 & echo $! >> {:?}; exit 0",
                pids("setsid.pids")
            ),
        ],
        extra,
    )?;
    util::write(
        &dir.join("schedules.json"),
        &schedules(
            json!([{ "id": "fork", "task": "fork", "cron": "0 0 * * * *", "modes": ["fork200", "fork200-ignore-term", "escape-setsid"] }]),
            json!({}),
        ),
    )?;
    let log = dir.join("run.log");
    let (status, _, took) = run_sampled(
        util::orchestrator(bin, dir, &["run-cycle", "--schedule", "fork"]),
        &log,
        Duration::from_secs(120),
    )?;
    let mut r = Report::default();
    r.check(
        "run-cycle: exit, duration",
        format!("{status:?} after {:.1} s", took.as_secs_f64()),
        status.is_some_and(|s| s.code() == Some(0)),
    );
    let read_pids = |name: &str| -> Vec<i32> {
        util::read_lossy(&dir.join(name))
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    for (name, label) in [
        ("fork200.pids", "fork200"),
        ("ignore.pids", "fork200-ignore-term"),
    ] {
        let list = read_pids(name);
        let alive: Vec<i32> = list
            .iter()
            .copied()
            .filter(|&p| util::alive(p, None))
            .collect();
        r.check(
            &format!("{label}: children alive after run-cycle returned"),
            format!("{} of {}", alive.len(), list.len()),
            list.len() == 200 && alive.is_empty(),
        );
        for pid in alive {
            util::signal(pid, Signal::SIGKILL);
        }
    }
    let escaped: Vec<i32> = read_pids("setsid.pids");
    let escaped_alive = escaped.iter().filter(|&&p| util::alive(p, None)).count();
    r.info(
        "escape-setsid: a child that left the group (documented limit)",
        format!("{escaped_alive} of {} alive", escaped.len()),
    );
    for pid in escaped {
        util::signal(pid, Signal::SIGKILL);
    }
    r.info("rows", row_summary(dir, "fork"));
    r.print("floods (c): 200 children");
    util::finish_dir(tmp, !r.violations.is_empty());
    Ok(r.violations.is_empty())
}

// ---------------------------------------------------------------- (d)

struct Mount {
    path: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn fill(dir: &Path) -> u64 {
    let Ok(mut file) = fs::File::create(dir.join("filler")) else {
        return 0;
    };
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    written
}

fn full_disk(bin: &Path) -> Res<bool> {
    let tmp = util::instance_dir("full")?;
    let mount_point = tmp.path().join("fs");
    fs::create_dir_all(&mount_point).map_err(|e| e.to_string())?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mount_point)
        .status()
        .is_ok_and(|s| s.success());
    let _mount = mounted.then(|| Mount {
        path: mount_point.clone(),
    });
    let mut r = Report::default();
    r.info(
        "full filesystem by",
        if mounted {
            "a 2 MiB tmpfs mounted on the instance"
        } else {
            "RLIMIT_FSIZE 2 MiB (prlimit): mount refused"
        },
    );
    let dir = mount_point.join("inst");
    let ledger = tmp.path().join("ledger");
    fs::create_dir_all(&ledger).map_err(|e| e.to_string())?;
    let agent = util::write_agent(tmp.path())?;
    let agent = agent.to_string_lossy().into_owned();
    util::write_mode(
        &dir,
        "tick",
        &[&agent],
        &format!(
            "env = {{ REL_TOKENS = \"1-1\", REL_SLEEP_MS = \"0-200\", REL_LEDGER = {:?} }}",
            ledger.to_string_lossy()
        ),
    )?;
    util::write_mode(
        &dir,
        "bigout",
        &[
            "bash",
            "-c",
            "yes 'output line' | head -c 3M; echo; echo 'MEMORY Commands: tok-after-bigout'",
        ],
        "",
    )?;
    util::write(
        &dir.join("schedules.json"),
        &schedules(
            json!([
                { "id": "tick", "task": "tick", "cron": "* * * * * *", "modes": ["tick"], "overlap": "skip" },
                { "id": "bigout", "task": "bigout", "cron": "0 0 0 1 1 *", "modes": ["bigout"] },
            ]),
            json!({}),
        ),
    )?;
    let log = tmp.path().join("serve.log");
    let wrap = |args: &[&str]| -> Command {
        if mounted {
            util::orchestrator(bin, &dir, args)
        } else {
            let mut c = Command::new("prlimit");
            c.arg(format!("--fsize={}", 2 * MIB))
                .arg("--")
                .arg(bin)
                .arg("--dir")
                .arg(&dir)
                .args(args);
            c
        }
    };

    // d1: a mode whose log fills the disk.
    let (status, _, took) = run_sampled(
        wrap(&["run-cycle", "--schedule", "bigout"]),
        &log,
        Duration::from_secs(60),
    )?;
    let out = util::strip_ansi(&util::read_lossy(&log));
    r.check(
        "d1 run-cycle with a log that fills the disk: exit, duration",
        format!("{status:?} after {:.1} s", took.as_secs_f64()),
        status.is_some_and(|s| s.code().is_some()),
    );
    r.info(
        "d1 output",
        out.trim()
            .replace('\n', " / ")
            .chars()
            .take(400)
            .collect::<String>(),
    );
    r.info("d1 rows", row_summary(&dir, "bigout"));
    r.info(
        "d1 disk use after",
        format!("{} bytes free", free_bytes(&mount_point)),
    );
    if let Some(run) = latest_run_dir(&dir, "bigout") {
        let _ = fs::remove_dir_all(run);
    }

    // d2: the service on a disk that fills, then frees.
    let mut serve = util::spawn_logged(wrap(&["serve"]), &log)?;
    let pid = serve.id() as i32;
    std::thread::sleep(Duration::from_secs(5));
    let before_rows = rows_of(&dir, "tick").len();
    let base = util::sample(pid, Duration::ZERO);
    let log_len_before = util::read_lossy(&log).len();
    let filled = fill(&mount_point);
    let full_from = Instant::now();
    let mut samples = Vec::new();
    while full_from.elapsed() < Duration::from_secs(15) {
        if let Some(s) = util::sample(pid, full_from.elapsed()) {
            samples.push(s);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let up_while_full = util::alive(pid, None);
    let rows_while_full = rows_of(&dir, "tick").len();
    let full_log = util::strip_ansi(&util::read_lossy(&log)[log_len_before..]);
    let _ = fs::remove_file(mount_point.join("filler"));
    std::thread::sleep(Duration::from_secs(6));
    let rows_after = rows_of(&dir, "tick").len();
    let up_after = util::alive(pid, None);
    util::signal(pid, Signal::SIGTERM);
    let exit = util::wait_timeout(&mut serve, Duration::from_secs(60));
    if exit.is_none() {
        util::signal(pid, Signal::SIGKILL);
        let _ = serve.wait();
    }

    r.info("d2 filler written", format!("{filled} bytes"));
    r.info(
        "d2 tick rows: before full / while full / after freeing",
        format!("{before_rows} / {rows_while_full} / {rows_after}"),
    );
    r.check(
        "d2 serve up while the disk was full",
        up_while_full,
        up_while_full,
    );
    r.check("d2 serve up after the disk was freed", up_after, up_after);
    r.check(
        "d2 rows written again after freeing",
        rows_after > rows_while_full,
        rows_after > rows_while_full,
    );
    r.check(
        "d2 serve exit after SIGTERM",
        format!("{exit:?}"),
        exit.is_some_and(|s| s.code() == Some(0)),
    );
    if let (Some(base), Some(last)) = (base, samples.last()) {
        let cpu = last.cpu_ticks.saturating_sub(base.cpu_ticks) as f64
            / util::clock_ticks() as f64
            / 15.0;
        let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
        r.check(
            "d2 CPU while full (no spin)",
            format!("{:.0} % of one core", cpu * 100.0),
            cpu < 0.5,
        );
        r.check(
            "d2 RSS before full -> max while full",
            format!("{} kB -> {rss_max} kB", base.rss_kb),
            rss_max < base.rss_kb + 16 * 1024,
        );
    }
    let error_lines: Vec<&str> = full_log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .collect();
    let mut kinds: Vec<String> = error_lines
        .iter()
        .map(|l| {
            let l = l
                .split_once("WARN ")
                .or_else(|| l.split_once("ERROR "))
                .map_or(*l, |x| x.1);
            l.chars()
                .filter(|c| !c.is_ascii_digit())
                .take(200)
                .collect()
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    r.info(
        "d2 warnings/errors logged while full",
        format!("{} lines, {} kinds", error_lines.len(), kinds.len()),
    );
    for (i, k) in kinds.iter().take(6).enumerate() {
        r.info(&format!("d2 kind {}", i + 1), k);
    }
    let enospc =
        full_log.contains("No space left on device") || full_log.contains("File too large");
    r.check("d2 the error names the cause (ENOSPC)", enospc, enospc);
    if let Ok(timing) = util::read_timing(&dir) {
        r.info(
            "d2 TSV lines that do not parse (torn by ENOSPC, then terminated)",
            format!(
                "{} {:?}",
                timing.bad_lines.len(),
                timing
                    .bad_lines
                    .iter()
                    .take(2)
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
            ),
        );
        let ledger = util::read_ledger(&ledger);
        let mut committed = util::memory_tokens(&dir);
        let mut archive = util::ArchiveScan::default();
        archive.update(&dir.join("persistent-memory.archive.md"));
        committed.extend(archive.tokens);
        let recorded: std::collections::HashSet<util::RunKey> = timing
            .rows
            .iter()
            .map(|r| (r.cycle.clone(), r.mode.clone(), r.attempt))
            .collect();
        let (mut rec, mut lost) = (0, 0);
        for (key, tokens) in &ledger {
            if recorded.contains(key) {
                rec += tokens.len();
                lost += tokens.iter().filter(|t| !committed.contains(*t)).count();
            }
        }
        let printed: usize = ledger.values().map(Vec::len).sum();
        r.info(
            "d2 MEMORY tokens: printed / of recorded runs / of recorded runs in neither file",
            format!("{printed} / {rec} / {lost}"),
        );
    }
    r.print("floods (d): full filesystem");
    drop(_mount);
    util::finish_dir(tmp, !r.violations.is_empty());
    Ok(r.violations.is_empty())
}

fn free_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0)
}
