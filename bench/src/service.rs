//! Our side of the figures that need the long-running service (`serve`): fire lateness
//! (1), idle cost (2), shutdown (6), reload (7) and the RSS of 10,000 schedules (8).
//!
//! [`Serve`] drives one service: it starts `loop-orchestrator --dir D serve` with
//! `NOTIFY_SOCKET` pointing at a datagram socket of its own (SPEC §7: `READY=1` after
//! load), waits for readiness, and stops it with SIGTERM. The socket and the service's
//! log live outside the instance directory so they never trigger a reload. While the
//! binary has no `serve` (it exits at once saying so) every figure here reports
//! "needs serve" instead of a value.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loop_orchestrator::timing::{CYCLE_MODE, TimingFile};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::Size;
use crate::fire::{self, Fire, FireStats, Idle};
use crate::instance;
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
    let mut serve = Serve::start(instance, aside)?;
    if !serve.wait_ready(Duration::from_secs(10))? {
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(serve)
}

fn trivial_instance(
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
pub fn fire_ours(n: usize, secs: u64) -> Result<FireStats, Unmeasured> {
    let root = sys::tempdir()?;
    let dir = root.path().join("instance");
    let ids: Vec<String> = (0..n).map(|i| format!("f-{i:04}")).collect();
    let schedules = ids
        .iter()
        .map(|id| json!({ "id": id, "task": "fire", "cron": "* * * * * *", "modes": ["noop"] }))
        .collect();
    trivial_instance(&dir, schedules, n)?;
    let serve = start_ready(&dir, root.path())?;
    let window = fire::window_from_now(secs);
    fire::sleep_until_second(window.end, Duration::from_millis(1500));
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
            })
        })
        .collect();
    Ok(fire::analyse(&fires, n, window))
}

/// Figure 2, ours: `jobs` hourly schedules that do not come due while measured.
pub fn idle_ours(jobs: usize, secs: u64) -> Result<Idle, Unmeasured> {
    let root = sys::tempdir()?;
    let dir = root.path().join("instance");
    let cron = format!("0 {} * * * *", fire::far_minute());
    let schedules = (0..jobs)
        .map(|i| json!({ "id": format!("h-{i:02}"), "task": "idle", "cron": cron, "modes": ["noop"] }))
        .collect();
    trivial_instance(&dir, schedules, 1)?;
    let serve = start_ready(&dir, root.path())?;
    let idle = fire::measure_idle(serve.pid(), Duration::from_secs(1), secs)?;
    serve.stop(Duration::from_secs(35))?;
    Ok(idle)
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

/// Figure 6: SIGTERM with 100 running modes. Hook: 100 schedules firing at one instant,
/// `max_concurrent_cycles = 100`, a mode that exits on TERM (e.g. `sleep 600`) and one
/// that ignores it (`trap '' TERM` then sleep) with a short `kill_grace`; when all 100
/// children run (`pgrep -P`), time `Serve::stop` and count `interrupted` rows.
pub fn shutdown_figure(_size: Size) -> Figure {
    let mut figure = Figure::new(
        6,
        "Shutdown",
        "SIGTERM to `serve` with 100 running modes that exit on TERM, and with 100 that \
         ignore it: time to exit, and 100 `interrupted` rows each time. No baseline.",
    );
    for (case, target) in [
        ("100 modes exit on TERM", "≤ 1 s"),
        ("100 modes ignore TERM", "≤ kill_grace + 1 s"),
    ] {
        figure.lines.push(
            Line::new(case, "time to exit")
                .target(target, Verdict::Info)
                .pending(NEEDS_SERVE),
        );
        figure.lines.push(
            Line::new(case, "`interrupted` rows")
                .target("100", Verdict::Info)
                .pending(NEEDS_SERVE),
        );
    }
    figure
}

/// Figure 7: reload latency. Hook: with serve ready, write schedules.json.tmp and rename
/// it over schedules.json; time until `RELOADING=1` then `READY=1` arrive on the notify
/// socket (or the reload log line), median of several renames.
pub fn reload_figure(_size: Size) -> Figure {
    let mut figure = Figure::new(
        7,
        "Reload",
        "Time from an atomic rename of schedules.json to the new schedule being armed \
         (sd_notify READY=1 after RELOADING=1, or the log line). No baseline.",
    );
    figure.lines.push(
        Line::new("rename of schedules.json", "time to armed")
            .target("≤ 250 ms", Verdict::Info)
            .pending(NEEDS_SERVE),
    );
    figure
}
