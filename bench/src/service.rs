//! Our side of the figures that need the long-running service (`serve`): fire lateness
//! (1), idle cost (2), shutdown (6), reload (7) and the RSS of 10,000 schedules (8).
//!
//! [`Serve`] drives one service: it starts `loop-orchestrator --dir D serve` with
//! `NOTIFY_SOCKET` pointing at a datagram socket of its own (SPEC §7: `READY=1` after
//! load), waits for readiness, and stops it with SIGTERM. The socket and the service's
//! log live outside the instance directory so they never trigger a reload. While the
//! binary has no `serve` (it exits at once saying so) every figure here reports
//! "needs serve" instead of a value.
//!
//! The readiness and reload figures rely on sd_notify; a `serve` that never sends
//! `READY=1` is given a one-second settle instead (figures 1, 2, 8), and fails figure 7.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loop_orchestrator::timing::{CYCLE_MODE, Status, TimingFile};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::Size;
use crate::instance;
use crate::lateness::{self, Fire, FireStats};
use crate::report::{Figure, Line, Verdict};
use crate::stats;
use crate::sys;

pub const NEEDS_SERVE: &str = "needs serve";

/// Why our side of a figure has no value.
#[derive(Debug, Clone)]
pub enum Unmeasured {
    /// The binary cannot do it yet.
    Pending(String),
    /// It ran and something went wrong: a harness or product failure.
    Error(String),
}

impl Unmeasured {
    /// The table cell, recording an error in the figure.
    pub fn cell(&self, figure: &mut Figure, context: &str) -> String {
        match self {
            Unmeasured::Pending(why) => why.clone(),
            Unmeasured::Error(e) => {
                figure.errors.push(format!("{context}: {e}"));
                "error".into()
            }
        }
    }
}

impl From<String> for Unmeasured {
    fn from(e: String) -> Self {
        Unmeasured::Error(e)
    }
}

/// One running `serve`.
pub struct Serve {
    child: Child,
    notify: UnixDatagram,
    log: PathBuf,
    ready: bool,
}

impl Serve {
    /// Starts `serve` on `instance`; `aside` is a directory outside it for the notify
    /// socket and the log.
    pub fn start(instance: &Path, aside: &Path) -> Result<Serve, Unmeasured> {
        Serve::start_with(instance, aside, &[])
    }

    /// [`Serve::start`] with more arguments of `serve` (`--metrics ADDR`).
    pub fn start_with(instance: &Path, aside: &Path, args: &[&str]) -> Result<Serve, Unmeasured> {
        let bin = sys::orchestrator_bin()?;
        let socket = aside.join("notify.sock");
        let _ = std::fs::remove_file(&socket);
        let notify = UnixDatagram::bind(&socket)
            .map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let log = aside.join("serve.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("--dir")
            .arg(instance)
            .arg("serve")
            .args(args)
            .env("NOTIFY_SOCKET", &socket)
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("LOOP_ORCHESTRATOR_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start serve: {e}"))?;
        Ok(Serve {
            child,
            notify,
            log,
            ready: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_head(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().take(3).collect::<Vec<_>>().join(" / ")
    }

    /// Waits for `READY=1`. `Ok(false)`: still running without having said so (a build
    /// without sd_notify); an exit before it is an error, or "needs serve" when the
    /// binary says the service is not available.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<bool, Unmeasured> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                let head = self.log_head();
                return Err(if head.contains("not available") {
                    Unmeasured::Pending(NEEDS_SERVE.into())
                } else {
                    Unmeasured::Error(format!("serve exited with {status} before ready: {head}"))
                });
            }
            if let Ok(n) = self.notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l == "READY=1") {
                    self.ready = true;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, String> {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGTERM).map_err(|e| format!("kill(SIGTERM): {e}"))?;
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().map_err(|e| e.to_string())?;
                return Err(format!(
                    "serve did not stop within {grace:?} of SIGTERM (killed: {status})"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts serve and waits for readiness, settling a second when it does not notify.
fn start_ready(instance: &Path, aside: &Path) -> Result<Serve, Unmeasured> {
    start_ready_with(instance, aside, &[])
}

pub fn start_ready_with(instance: &Path, aside: &Path, args: &[&str]) -> Result<Serve, Unmeasured> {
    let mut serve = Serve::start_with(instance, aside, args)?;
    if !serve.wait_ready(Duration::from_secs(10))? {
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(serve)
}

pub fn trivial_instance(
    dir: &Path,
    schedules: Vec<serde_json::Value>,
    slots: usize,
) -> Result<(), String> {
    instance::write(
        dir,
        "schedules.json",
        &instance::schedules_json(schedules, slots),
    )?;
    instance::true_mode(dir, "noop")?;
    instance::write(dir, "TODO.md", "# TODO\n\n- [ ] Measure serve\n")?;
    instance::fresh_memory(dir)
}

/// Figure 1, ours: `n` schedules every second, each one mode `true`, as many cycle slots
/// as schedules so that no fire waits for a slot.
/// `max_concurrent_cycles` of figure 1's instances.
pub const FIRE_SLOTS: usize = 64;

pub fn fire_ours(n: usize, secs: u64) -> Result<FireStats, Unmeasured> {
    fire_ours_with(n, secs, &[], |_| ()).map(|(stats, ())| stats)
}

/// [`fire_ours`] with more arguments of `serve`, and `during` run over the window (its
/// whole seconds, unix time) while the service fires.
pub fn fire_ours_with<R>(
    n: usize,
    secs: u64,
    args: &[&str],
    during: impl FnOnce(std::ops::Range<i64>) -> R,
) -> Result<(FireStats, R), Unmeasured> {
    let root = sys::tempdir()?;
    let dir = root.path().join("instance");
    let ids: Vec<String> = (0..n).map(|i| format!("f-{i:04}")).collect();
    let schedules = ids
        .iter()
        .map(|id| json!({ "id": id, "task": "fire", "cron": "* * * * * *", "modes": ["noop"] }))
        .collect();
    // At most 64 cycles at once: 1,000 processes spawned each second would measure the
    // machine's fork rate, not the timer; fires beyond the slots wait (and `skip` records
    // the instants whose previous cycle still waits), with started_at the dispatch time.
    trivial_instance(&dir, schedules, n.min(FIRE_SLOTS))?;
    let serve = start_ready_with(&dir, root.path(), args)?;
    let window = lateness::window_from_now(secs);
    let during = during(window.clone());
    lateness::sleep_until_second(window.end, Duration::from_millis(1000));
    serve.stop(Duration::from_secs(35))?;

    let log = TimingFile::new(dir.join("task_timing.tsv"))
        .read()
        .map_err(|e| e.to_string())?;
    if let Some(bad) = log.bad_lines.first() {
        return Err(Unmeasured::Error(format!(
            "task_timing.tsv has {} bad lines, first {bad}",
            log.bad_lines.len()
        )));
    }
    let index: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let fires: Vec<Fire> = log
        .rows
        .iter()
        .filter(|r| r.mode == CYCLE_MODE)
        .filter_map(|r| {
            let scheduled = r.scheduled_at?;
            Some(Fire {
                job: *index.get(r.schedule.as_str())?,
                second: scheduled.timestamp(),
                lateness_ms: (r.started_at - scheduled).num_microseconds()? as f64 / 1e3,
                skipped: r.status == Status::Skipped,
            })
        })
        .collect();
    Ok((lateness::analyse(&fires, n, window), during))
}

/// Figure 2, ours: `serve` with hourly schedules that do not come due while measured.
pub struct IdleServe {
    serve: Serve,
    _root: tempfile::TempDir,
}

impl IdleServe {
    pub fn start(jobs: usize) -> Result<IdleServe, Unmeasured> {
        let root = sys::tempdir()?;
        let dir = root.path().join("instance");
        let cron = format!("0 {} * * * *", lateness::far_minute());
        let schedules = (0..jobs)
            .map(|i| json!({ "id": format!("h-{i:02}"), "task": "idle", "cron": cron, "modes": ["noop"] }))
            .collect();
        trivial_instance(&dir, schedules, 1)?;
        let serve = start_ready(&dir, root.path())?;
        Ok(IdleServe { serve, _root: root })
    }

    pub fn pid(&self) -> u32 {
        self.serve.pid()
    }

    pub fn stop(self) -> Result<(), Unmeasured> {
        self.serve.stop(Duration::from_secs(35))?;
        Ok(())
    }
}

/// Figure 8, second line: RSS of serve holding the schedules of the instance at `dir`
/// (its modes replaced by `true` first, so a fire during the measurement is cheap).
pub fn serve_rss(dir: &Path, case: &str, judged: bool) -> Line {
    let line = Line::new(case, "RSS of `serve` after ready");
    let measured = (|| -> Result<u64, Unmeasured> {
        for slug in [
            "implementation",
            "validation",
            "quality",
            "integration",
            "planning",
        ] {
            instance::true_mode(dir, slug)?;
        }
        let aside = sys::tempdir()?;
        let serve = start_ready(dir, aside.path())?;
        std::thread::sleep(Duration::from_millis(500));
        let rss = sys::proc_sample(serve.pid())?.rss_kib;
        serve.stop(Duration::from_secs(35))?;
        Ok(rss)
    })();
    match measured {
        Ok(kib) => line.ours(stats::mib(kib)).target(
            "≤ 64 MiB",
            if judged {
                Verdict::judge(kib <= 64 * 1024)
            } else {
                Verdict::Info
            },
        ),
        Err(Unmeasured::Pending(why)) => line.pending(&why),
        Err(Unmeasured::Error(e)) => line.pending(&format!("error: {e}")),
    }
}

/// `(pid, ppid, pgrp)` of every process, from `/proc/PID/stat`.
fn processes() -> Vec<(u32, u32, u32)> {
    let Ok(listing) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name may hold spaces and parentheses: fields start after the last ')'.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let _state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            let pgrp = fields.next()?.parse().ok()?;
            Some((pid, ppid, pgrp))
        })
        .collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.1 == pid)
        .map(|p| p.0)
        .collect()
}

/// A 6-field cron expression for the UTC second `at` (a fixed time, fires once a day).
fn cron_at(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::Timelike;
    format!("{} {} {} * * *", at.second(), at.minute(), at.hour())
}

/// What one shutdown measurement found.
struct Shutdown {
    exit_after: Duration,
    status: ExitStatus,
    interrupted_modes: usize,
    interrupted_cycles: usize,
    survivors: usize,
}

/// `count` schedules fire at one instant into a mode that runs `command`; once all
/// `count` children run, SIGTERM, and time the exit.
fn shutdown_case(count: usize, command: &str, kill_grace: &str) -> Result<Shutdown, Unmeasured> {
    let root = sys::tempdir()?;
    let dir = root.path().join("instance");
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let schedules = (0..count)
        .map(|i| json!({ "id": format!("t-{i:03}"), "task": "wait", "cron": cron_at(at), "modes": ["wait"] }))
        .collect();
    let mut doc: serde_json::Value =
        serde_json::from_str(&instance::schedules_json(schedules, count))
            .map_err(|e| e.to_string())?;
    doc["shutdown_grace"] = json!("0s");
    instance::write(&dir, "schedules.json", &doc.to_string())?;
    instance::write(
        &dir,
        "modes/wait.md",
        &format!(
            "+++\nname = \"wait\"\ncommand = {command}\nprompt = \"none\"\nkill_grace = \"{kill_grace}\"\n+++\n# wait\n"
        ),
    )?;
    instance::fresh_memory(&dir)?;
    let serve = start_ready(&dir, root.path())?;
    let pid = serve.pid();
    let deadline = Instant::now() + Duration::from_secs(15);
    let children = loop {
        let children = children_of(pid);
        if children.len() >= count {
            break children;
        }
        if Instant::now() > deadline {
            return Err(Unmeasured::Error(format!(
                "only {} of {count} modes running 12 s after their fire",
                children.len()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the last ones get past exec.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = serve.stop(Duration::from_secs(120))?;
    let exit_after = start.elapsed();
    let groups: std::collections::HashSet<u32> = children.into_iter().collect();
    let survivors = processes().iter().filter(|p| groups.contains(&p.2)).count();
    let log = TimingFile::new(dir.join("task_timing.tsv"))
        .read()
        .map_err(|e| e.to_string())?;
    let interrupted = |cycle: bool| {
        log.rows
            .iter()
            .filter(|r| (r.mode == CYCLE_MODE) == cycle && r.status == Status::Interrupted)
            .count()
    };
    Ok(Shutdown {
        exit_after,
        status,
        interrupted_modes: interrupted(false),
        interrupted_cycles: interrupted(true),
        survivors,
    })
}

/// Figure 6: SIGTERM with 100 running modes that exit on TERM, and with 100 that ignore
/// it (then the service's SIGKILL after `kill_grace` ends them).
pub fn shutdown_figure(size: Size) -> Figure {
    let count = if size == Size::Smoke { 10 } else { 100 };
    let kill_grace = 2;
    let mut figure = Figure::new(
        6,
        "Shutdown",
        format!(
            "{count} schedules fire at one instant (`max_concurrent_cycles = {count}`, \
             `shutdown_grace = \"0s\"` so that termination starts at once); when all {count} \
             modes run, SIGTERM to `serve` and time until it exits. Modes: `sleep 600` (exits \
             on TERM) and `bash -c \"trap '' TERM; sleep 600\"` (ignores it; `kill_grace = \
             \"{kill_grace}s\"`). Rows: mode rows `interrupted`. No baseline."
        ),
    );
    let judged = size != Size::Smoke;
    let cases = [
        ("exit on TERM", r#"["sleep", "600"]"#, 1.0),
        (
            "ignore TERM",
            r#"["bash", "-c", "trap '' TERM; sleep 600"]"#,
            kill_grace as f64 + 1.0,
        ),
    ];
    for (name, command, limit_s) in cases {
        let case = format!("{count} modes {name}");
        eprintln!("  figure 6: {case}");
        let target = if limit_s > 1.0 {
            format!("≤ kill_grace + 1 s = {limit_s:.0} s")
        } else {
            "≤ 1 s".into()
        };
        match shutdown_case(count, command, &format!("{kill_grace}s")) {
            Ok(s) => {
                let secs = s.exit_after.as_secs_f64();
                let judge = |ok: bool| {
                    if judged {
                        Verdict::judge(ok)
                    } else {
                        Verdict::Info
                    }
                };
                figure.lines.push(
                    Line::new(&case, "SIGTERM to exit")
                        .ours(stats::ms(secs * 1e3))
                        .target(target, judge(secs <= limit_s && s.status.success())),
                );
                figure.lines.push(
                    Line::new(&case, "`interrupted` mode rows")
                        .ours(format!(
                            "{} ({} cycle rows)",
                            s.interrupted_modes, s.interrupted_cycles
                        ))
                        .target(count.to_string(), judge(s.interrupted_modes == count)),
                );
                if !s.status.success() {
                    figure
                        .errors
                        .push(format!("{case}: serve exited with {}", s.status));
                }
                if s.survivors > 0 {
                    figure.errors.push(format!(
                        "{case}: {} processes of the modes' groups survived the service",
                        s.survivors
                    ));
                }
            }
            Err(u) => {
                let cell = u.cell(&mut figure, &case);
                figure.lines.push(
                    Line::new(&case, "SIGTERM to exit")
                        .target(target, Verdict::Info)
                        .pending(&cell),
                );
            }
        }
    }
    figure
}

/// Sends the reload and waits for `READY=1` after `RELOADING=1` with the expected status.
fn timed_reload(serve: &mut Serve, dir: &Path, count: usize) -> Result<Duration, Unmeasured> {
    let schedules = (0..count)
        .map(|i| json!({ "id": format!("r-{i:03}"), "task": "reload", "cron": "0 0 3 * * *", "modes": ["noop"] }))
        .collect();
    let text = instance::schedules_json(schedules, 1);
    let temp = dir.join("schedules.json.new");
    std::fs::write(&temp, text).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    while serve.notify.recv(&mut buf).is_ok() {}
    let start = Instant::now();
    std::fs::rename(&temp, dir.join("schedules.json")).map_err(|e| e.to_string())?;
    let expected = format!("STATUS={count} schedules ({count} armed)");
    let mut reloading = false;
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(n) = serve.notify.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            reloading |= message.lines().any(|l| l == "RELOADING=1");
            if reloading && message.lines().any(|l| l == "READY=1") {
                let elapsed = start.elapsed();
                if !message.lines().any(|l| l.starts_with(&expected)) {
                    return Err(Unmeasured::Error(format!(
                        "reloaded, but the status is not {expected:?}: {message:?}"
                    )));
                }
                return Ok(elapsed);
            }
        }
    }
    Err(Unmeasured::Error(
        "no RELOADING=1 then READY=1 within 5 s of the rename".into(),
    ))
}

/// Figure 7: from an atomic rename of schedules.json to the service ready with the new
/// schedule armed (its `READY=1` after `RELOADING=1`, whose status counts the armed
/// schedules).
pub fn reload_figure(size: Size) -> Figure {
    let (runs, gap_ms) = match size {
        Size::Full => (11, 1500),
        Size::Quick => (3, 1000),
        Size::Smoke => (2, 500),
    };
    let mut figure = Figure::new(
        7,
        "Reload",
        format!(
            "With `serve` ready, schedules.json.new (one more schedule each time) is renamed over \
             schedules.json; time from the rename to sd_notify `READY=1` following \
             `RELOADING=1` with a status naming every schedule armed. {runs} renames, \
             {gap_ms} ms apart. No baseline."
        ),
    );
    let judged = size != Size::Smoke;
    let case = "rename of schedules.json";
    let measured = (|| -> Result<Vec<Duration>, Unmeasured> {
        let root = sys::tempdir()?;
        let dir = root.path().join("instance");
        let schedules = vec![
            json!({ "id": "r-000", "task": "reload", "cron": "0 0 3 * * *", "modes": ["noop"] }),
        ];
        trivial_instance(&dir, schedules, 1)?;
        let mut serve = Serve::start(&dir, root.path())?;
        if !serve.wait_ready(Duration::from_secs(10))? {
            return Err(Unmeasured::Error(
                "serve sent no READY=1 within 10 s".into(),
            ));
        }
        let mut times = Vec::new();
        for run in 0..runs {
            std::thread::sleep(Duration::from_millis(gap_ms));
            times.push(timed_reload(&mut serve, &dir, run + 2)?);
        }
        serve.stop(Duration::from_secs(35))?;
        Ok(times)
    })();
    match measured {
        Ok(times) => {
            let samples = stats::Samples::from_durations_ms(&times);
            figure.lines.push(
                Line::new(case, "rename to armed, median")
                    .ours(stats::ms(samples.median()))
                    .target(
                        "≤ 250 ms",
                        if judged {
                            Verdict::judge(samples.median() <= 250.0)
                        } else {
                            Verdict::Info
                        },
                    ),
            );
            figure.lines.push(
                Line::new(case, "rename to armed, max")
                    .ours(stats::ms(samples.max()))
                    .target(
                        "≤ 250 ms",
                        if judged {
                            Verdict::judge(samples.max() <= 250.0)
                        } else {
                            Verdict::Info
                        },
                    ),
            );
        }
        Err(u) => {
            let cell = u.cell(&mut figure, case);
            figure.lines.push(
                Line::new(case, "rename to armed")
                    .target("≤ 250 ms", Verdict::Info)
                    .pending(&cell),
            );
        }
    }
    figure
}
