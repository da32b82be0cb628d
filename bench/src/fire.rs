//! Figures 1 and 2: fire precision and idle cost, ours (`serve`, see [`crate::service`])
//! against tokio-cron-scheduler 0.15 with the same jobs.
//!
//! Lateness of a fire is measured against the whole second it was meant for. The
//! baseline's callbacks take `Utc::now()` first thing and round it down to the second;
//! ours reads `started_at - scheduled_at` of the cycle rows. Per job and per second of
//! the window, no fire is a *missed* fire and every fire beyond the first is *doubled*.
//! Seconds at the edges of the window are left out, so start-up and shutdown do not
//! count.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::Size;
use crate::lateness::{Fire, FireStats, analyse, far_minute, fire_at, window_from_now};
use crate::report::{Figure, Line, Verdict};
use crate::service;
use crate::stats;
use crate::sys;

/// tokio-cron-scheduler with `jobs` jobs on `* * * * * *` for `secs` seconds.
fn baseline_fire(jobs: usize, secs: u64) -> Result<FireStats, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let fires: Arc<Mutex<Vec<Fire>>> =
        Arc::new(Mutex::new(Vec::with_capacity(jobs * (secs as usize + 4))));
    let result = runtime.block_on(async {
        let mut sched = JobScheduler::new()
            .await
            .map_err(|e| format!("JobScheduler::new: {e}"))?;
        for job in 0..jobs {
            let fires = fires.clone();
            let cron_job = Job::new("* * * * * *", move |_uuid, _sched| {
                let now = Utc::now();
                if let Ok(mut fires) = fires.lock() {
                    fires.push(fire_at(job, now));
                }
            })
            .map_err(|e| format!("Job::new: {e}"))?;
            sched
                .add(cron_job)
                .await
                .map_err(|e| format!("JobScheduler::add: {e}"))?;
        }
        sched
            .start()
            .await
            .map_err(|e| format!("JobScheduler::start: {e}"))?;
        let window = window_from_now(secs);
        // A callback is attributed to the second it runs in, so a little past the end is
        // enough.
        let end_ms = window.end * 1000 + 200 - Utc::now().timestamp_millis();
        tokio::time::sleep(Duration::from_millis(end_ms.max(0) as u64)).await;
        sched
            .shutdown()
            .await
            .map_err(|e| format!("JobScheduler::shutdown: {e}"))?;
        Ok::<_, String>(window)
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    let window = result?;
    let fires = fires.lock().map_err(|_| "a callback panicked")?.clone();
    Ok(analyse(&fires, jobs, window))
}

/// `__tcs-idle JOBS MINUTE`: tokio-cron-scheduler with JOBS hourly jobs at MINUTE, idle
/// until stdin closes.
pub fn idle_worker(args: &[String]) -> Result<(), String> {
    let [jobs, minute] = args else {
        return Err("usage: __tcs-idle JOBS MINUTE".into());
    };
    let jobs: usize = jobs.parse().map_err(|e| format!("jobs: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let _sched = runtime.block_on(async {
        let sched = JobScheduler::new().await.map_err(|e| e.to_string())?;
        for _ in 0..jobs {
            let job = Job::new(format!("0 {minute} * * * *"), |_uuid, _sched| {})
                .map_err(|e| e.to_string())?;
            sched.add(job).await.map_err(|e| e.to_string())?;
        }
        sched.start().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(sched)
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    Ok(())
}

/// Context switches and RSS of an idle process: sampled `warmup` after it is ready and
/// again `secs` later.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub wakeups: u64,
    pub secs: u64,
    pub threads: usize,
    pub rss_kib: u64,
    pub anon_kib: u64,
}

/// Samples every pid `warmup` from now and again `secs` later, so that processes
/// measured together share the same conditions.
pub fn measure_idle(pids: &[u32], warmup: Duration, secs: u64) -> Vec<Result<Idle, String>> {
    std::thread::sleep(warmup);
    let before: Vec<_> = pids.iter().map(|&pid| sys::proc_sample(pid)).collect();
    std::thread::sleep(Duration::from_secs(secs));
    pids.iter()
        .zip(before)
        .map(|(&pid, before)| {
            let before = before?;
            let after = sys::proc_sample(pid)?;
            Ok(Idle {
                wakeups: after
                    .voluntary_switches
                    .saturating_sub(before.voluntary_switches),
                secs,
                threads: after.threads,
                rss_kib: after.rss_kib,
                anon_kib: after.anon_kib,
            })
        })
        .collect()
}

/// The baseline's idle process, started and ready.
struct TcsIdle(std::process::Child);

impl TcsIdle {
    fn start(jobs: usize) -> Result<TcsIdle, String> {
        let child = Command::new(sys::self_exe()?)
            .arg("__tcs-idle")
            .arg(jobs.to_string())
            .arg(far_minute().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the idle worker: {e}"))?;
        let mut worker = TcsIdle(child);
        let mut line = String::new();
        if let Some(out) = worker.0.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() == "ready" {
            Ok(worker)
        } else {
            Err(format!("the idle worker said {line:?} instead of ready"))
        }
    }
}

impl Drop for TcsIdle {
    fn drop(&mut self) {
        // Closing stdin ends the worker.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

pub fn fire_figure(size: Size) -> Figure {
    let (jobs, secs): (&[usize], u64) = match size {
        Size::Full => (&[1, 100, 1000], 20),
        Size::Quick => (&[1, 100, 1000], 3),
        Size::Smoke => (&[10], 1),
    };
    let mut figure = Figure::new(
        1,
        "Fire lateness",
        format!(
            "N schedules firing every second for {secs} s (whole seconds, edges excluded). \
             Ours: `serve`, one mode `true` per schedule, `max_concurrent_cycles` = min(N, 64), lateness = started_at − scheduled_at \
             of the cycle rows. Baseline: tokio-cron-scheduler 0.15 (`JobScheduler::new()`, \
             `Job::new(\"* * * * * *\")`) with N jobs, lateness of the callback against the \
             second it fired for. Missed: (job, second) pairs without a cycle row; doubled: \
             extra rows for a pair; lateness over the fires that started (the TSV has \
             millisecond resolution, so `< 1 ms` is judged as 1 ms)."
        ),
    );
    let judged = size != Size::Smoke;
    for &n in jobs {
        eprintln!("  figure 1: baseline, N = {n}");
        let base = match baseline_fire(n, secs) {
            Ok(stats) => stats,
            Err(e) => {
                figure.errors.push(format!("baseline N = {n}: {e}"));
                continue;
            }
        };
        eprintln!("  figure 1: ours, N = {n}");
        let ours =
            service::fire_ours(n, secs).map_err(|u| u.cell(&mut figure, &format!("ours, N = {n}")));
        let case = format!("N = {n}");
        let p99_target = match n {
            100 => Some(5.0),
            1000 => Some(20.0),
            _ => None,
        };
        let mut lines = Vec::new();
        for (metric, pct) in [
            ("lateness p50", 50.0),
            ("lateness p99", 99.0),
            ("lateness max", 100.0),
        ] {
            let b = base.lateness.percentile(pct);
            let mut line = Line::new(&case, metric).baseline(stats::ms(b));
            match &ours {
                Ok(o) => {
                    // The TSV holds milliseconds: 0 means under 1 ms, judged as 1 ms.
                    let v = o.lateness.percentile(pct);
                    let ratio = stats::ratio(v.max(1.0), b);
                    let cell = if v < 1.0 {
                        "< 1 ms".to_string()
                    } else {
                        stats::ms(v)
                    };
                    line = line.ours(cell).ratio(ratio);
                    if v < 1.0 {
                        line.ratio_bound = true;
                    }
                    if pct == 99.0 {
                        let absolute = p99_target.is_none_or(|t| v <= t);
                        let target = match p99_target {
                            Some(t) => format!("≤ {}; ratio ≤ 0.05", stats::ms(t)),
                            None => "ratio ≤ 0.05".into(),
                        };
                        let ok = absolute && ratio.is_some_and(|r| r <= 0.05);
                        line = line.target(
                            target,
                            if judged {
                                Verdict::judge(ok)
                            } else {
                                Verdict::Info
                            },
                        );
                    }
                }
                Err(why) => line = line.pending(why),
            }
            lines.push(line);
        }
        for (metric, b, o) in [
            ("missed fires", base.missed, ours.as_ref().map(|o| o.missed)),
            (
                "doubled fires",
                base.doubled,
                ours.as_ref().map(|o| o.doubled),
            ),
        ] {
            let mut line = Line::new(&case, metric).baseline(format!("{b} of {}", base.expected));
            match o {
                Ok(v) => {
                    line = line.ours(v.to_string()).target(
                        "0",
                        if judged {
                            Verdict::judge(v == 0)
                        } else {
                            Verdict::Info
                        },
                    )
                }
                Err(why) => line = line.pending(why),
            }
            lines.push(line);
        }
        let mut skipped =
            Line::new(&case, "skipped (overlap: previous cycle still running)").baseline("–");
        match &ours {
            Ok(o) => skipped = skipped.ours(format!("{} of {}", o.skipped, o.expected)),
            Err(why) => skipped = skipped.pending(why),
        }
        lines.push(skipped);
        figure.lines.extend(lines);
        figure.notes.push(format!(
            "N = {n}: baseline {} fires in the window{}",
            base.lateness.len(),
            match &ours {
                Ok(o) => format!(", ours {}", o.lateness.len()),
                Err(_) => String::new(),
            }
        ));
    }
    figure
}

pub fn idle_figure(size: Size) -> Figure {
    let secs = match size {
        Size::Full => 60,
        Size::Quick => 5,
        Size::Smoke => 1,
    };
    let mut figure = Figure::new(
        2,
        "Idle cost",
        format!(
            "10 hourly schedules (a minute half an hour away, so none comes due), process \
             idle for {secs} s after a 1 s settle: voluntary context switches summed over \
             /proc/PID/task/*/status, and VmRSS at the end (RssAnon beside it: the memory the process allocated, without the clean pages of its binary and libraries that the kernel maps in around each page touched). Ours: `serve`; baseline: \
             tokio-cron-scheduler 0.15 with the same 10 jobs in a process of its own."
        ),
    );
    let judged = size != Size::Smoke;
    // Both idle side by side, sampled over the same seconds.
    let base = match TcsIdle::start(10) {
        Ok(worker) => worker,
        Err(e) => {
            figure.errors.push(format!("baseline: {e}"));
            return figure;
        }
    };
    let ours = service::IdleServe::start(10);
    let mut pids = vec![base.0.id()];
    if let Ok(serve) = &ours {
        pids.push(serve.pid());
    }
    eprintln!("  figure 2: both idle for {secs} s");
    let mut samples = measure_idle(&pids, Duration::from_secs(1), secs).into_iter();
    drop(base);
    let base = match samples.next() {
        Some(Ok(idle)) => idle,
        Some(Err(e)) => {
            figure.errors.push(format!("baseline: {e}"));
            return figure;
        }
        None => return figure,
    };
    let ours = match ours {
        Ok(serve) => {
            let sample = samples
                .next()
                .unwrap_or_else(|| Err("no sample".into()))
                .map_err(service::Unmeasured::Error);
            serve.stop().and(sample)
        }
        Err(u) => Err(u),
    }
    .map_err(|u| u.cell(&mut figure, "ours"));
    let per_s = |i: &Idle| i.wakeups as f64 / i.secs as f64;
    let case = "10 hourly schedules";
    let mut wake = Line::new(case, format!("wake-ups in {secs} s")).baseline(format!(
        "{} ({:.1}/s, {} threads)",
        base.wakeups,
        per_s(&base),
        base.threads
    ));
    let mut rss = Line::new(case, "RSS").baseline(stats::mib(base.rss_kib));
    let mut anon =
        Line::new(case, "of which anonymous (RssAnon)").baseline(stats::mib(base.anon_kib));
    match &ours {
        Ok(o) => {
            wake = wake
                .ours(format!(
                    "{} ({:.1}/s, {} threads)",
                    o.wakeups,
                    per_s(o),
                    o.threads
                ))
                .ratio(stats::ratio(o.wakeups as f64, base.wakeups as f64))
                .target(
                    "0",
                    if judged {
                        Verdict::judge(o.wakeups == 0)
                    } else {
                        Verdict::Info
                    },
                );
            rss = rss
                .ours(stats::mib(o.rss_kib))
                .ratio(stats::ratio(o.rss_kib as f64, base.rss_kib as f64))
                .target(
                    "≤ 8 MiB",
                    if judged {
                        Verdict::judge(o.rss_kib <= 8 * 1024)
                    } else {
                        Verdict::Info
                    },
                );
            anon = anon
                .ours(stats::mib(o.anon_kib))
                .ratio(stats::ratio(o.anon_kib as f64, base.anon_kib as f64));
        }
        Err(why) => {
            wake = wake.pending(why);
            rss = rss.pending(why);
            anon = anon.pending(why);
        }
    }
    figure.lines.push(wake);
    figure.lines.push(rss);
    figure.lines.push(anon);
    figure
}
