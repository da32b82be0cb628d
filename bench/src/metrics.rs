//! `bench metrics [--quick|--smoke] [--write] [--out FILE]`: what `serve --metrics` costs
//! (SPEC §10). Not part of `all`: it runs figure 1's heaviest case three times.
//!
//! The client scrapes `/metrics` every 100 ms over one keep-alive connection with the
//! `Accept` header Prometheus 3 sends; latency is request to last byte of the body. The
//! baseline is `/healthz` fetched right after each scrape on the same connection: the wait
//! any request has on this machine at that moment, without the exposition's work.
//!
//! - **Scrape cost**: 1,000 schedules fire every second for 3 s, then a reload moves them
//!   to a minute half an hour away, so the exposition holds what a busy service's does
//!   (about ten series per schedule) and nothing fires while it is scraped.
//! - **Lateness beside scrapes**: figure 1's service at N = 1,000 (every schedule every
//!   second, one mode `true`, 64 cycle slots) runs three times over the same window: A
//!   without metrics, B with `--metrics` and scraped, C without metrics again. The
//!   baseline is A; |A − C| is the noise of two identical runs, so B is within noise when
//!   its p99 is at most max(A, C) + |A − C| + the TSV's 1 ms resolution. The scrapes of B,
//!   taken while 64 cycles start and end, are shown too.
//!
//! With `--write` the block `bench:10` of the benchmarks file is rewritten.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::Size;
use crate::lateness::{self, FireStats};
use crate::report::{self, Figure, Line, Verdict};
use crate::service::{self, Unmeasured};
use crate::stats::{self, Samples};

/// The figure's number in the benchmarks file.
pub const NUMBER: u8 = 10;
const SCRAPE_EVERY: Duration = Duration::from_millis(100);
/// What Prometheus 3 asks for (scrape_protocols' default order).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// How long the schedules of the scrape-cost run fire before they are moved away.
const FIRE_FIRST: Duration = Duration::from_secs(3);
const USAGE: &str = "usage: bench metrics [--quick] [--smoke] [--write] [--out FILE]";

/// What the scraping client saw.
#[derive(Debug, Default)]
struct Scrapes {
    /// Milliseconds, request to last byte.
    latency: Vec<f64>,
    /// The same for `/healthz` (a few bytes, no encoding), fetched right after each scrape
    /// on the same connection: what any request waits on this machine at that moment.
    health: Vec<f64>,
    failed: Vec<String>,
    bytes: usize,
    lines: usize,
    /// CPU time the service spent over the scrapes (user + system), when nothing else ran.
    service_cpu: Option<Duration>,
}

pub fn main(args: &[String]) -> Result<(), String> {
    let mut size = Size::Full;
    let mut write = false;
    let mut out = std::path::PathBuf::from(crate::DEFAULT_OUT);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => size = Size::Quick,
            "--smoke" => size = Size::Smoke,
            "--write" => write = true,
            "--out" => out = iter.next().ok_or(USAGE)?.into(),
            _ => return Err(USAGE.into()),
        }
    }
    let load_before = load_average();
    let mut figure = figure(size);
    figure.notes.push(format!(
        "load average (1 min) of the machine before and after: {load_before} and {}; the scrape \
         latencies are wall time on a machine shared with other work",
        load_average()
    ));
    println!("{}", report::TABLE_HEAD);
    print!("{}", report::rows(&figure));
    for note in &figure.notes {
        println!("- {note}");
    }
    for error in &figure.errors {
        println!("- **error:** {error}");
    }
    if write {
        let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
        report::write_file(
            &out,
            None,
            std::slice::from_ref(&figure),
            size.as_str(),
            &date,
        )
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    if figure.errors.is_empty() {
        Ok(())
    } else {
        Err("the figure found errors".into())
    }
}

fn figure(size: Size) -> Figure {
    let (n, secs) = match size {
        Size::Full => (1000, 20),
        Size::Quick => (1000, 3),
        Size::Smoke => (10, 1),
    };
    let judged = size != Size::Smoke;
    let mut figure = Figure::new(
        NUMBER,
        "Metrics scrape",
        format!(
            "`/metrics` scraped every 100 ms for {secs} s over one keep-alive connection, with the \
             `Accept` header of Prometheus 3 (OpenMetrics); latency: request to last byte; \
             baseline: `/healthz` (a few bytes) fetched right after each scrape on the same \
             connection, the wait of any request on this machine at that moment. \
             *Scrape cost*: {n} schedules fire every second for 3 s, then a reload moves them to a \
             minute half an hour away, so the exposition holds a busy service's series and nothing \
             fires while it is scraped. *Lateness beside scrapes*: figure 1's service at N = {n} \
             (every schedule every second, one mode `true`, {} cycle slots) runs three times: A \
             without metrics, B with `serve --metrics` and scraped, C without metrics again; \
             lateness as in figure 1, the baseline is A, and |A − C| is the noise of two identical \
             runs: B is within noise when its p99 ≤ max(A, C) + |A − C| + 1 ms (the TSV's \
             resolution). The scrapes of B, taken while 64 cycles start and end, are shown too. \
             Reproduce: `cargo run --release -p bench -- metrics --write`.",
            service::FIRE_SLOTS.min(n)
        ),
    );
    eprintln!("  metrics: scrape cost, {n} schedules");
    match quiet_scrapes(n, secs) {
        Ok(s) => scrape_lines(
            &mut figure,
            &format!("{n} schedules, nothing firing"),
            &s,
            true,
            judged,
        ),
        Err(u) => {
            u.cell(&mut figure, "scrape cost");
        }
    }
    eprintln!("  metrics: A, N = {n} without metrics");
    let a = service::fire_ours(n, secs);
    eprintln!("  metrics: B, N = {n} with --metrics, scraped every 100 ms");
    let b = free_address().map_err(Unmeasured::Error).and_then(|addr| {
        let flag = addr.to_string();
        service::fire_ours_with(n, secs, &["--metrics", &flag], move |window| {
            std::thread::spawn(move || scrape(addr, window))
        })
    });
    eprintln!("  metrics: C, N = {n} without metrics");
    let c = service::fire_ours(n, secs);
    let case = format!("N = {n}");
    let (b, scrapes) = match b {
        Ok((stats, scraper)) => match scraper.join() {
            Ok(scrapes) => (Ok(stats), Some(scrapes)),
            Err(_) => (Ok(stats), None),
        },
        Err(e) => (Err(e), None),
    };
    match &scrapes {
        Some(s) => scrape_lines(
            &mut figure,
            &format!("N = {n} firing every second (run B)"),
            s,
            false,
            judged,
        ),
        None => figure.errors.push("the scraping client failed".into()),
    }
    let mut unwrap = |run: Result<FireStats, Unmeasured>, name: &str| match run {
        Ok(stats) => Some(stats),
        Err(u) => {
            u.cell(&mut figure, name);
            None
        }
    };
    let (a, b, c) = (unwrap(a, "run A"), unwrap(b, "run B"), unwrap(c, "run C"));
    if let (Some(a), Some(b), Some(c)) = (a, b, c) {
        lateness_lines(&mut figure, &case, &a, &b, &c, judged);
    }
    figure
}

/// The lines of one scraping run; `p99_target`: the 10 ms target applies to it.
fn scrape_lines(figure: &mut Figure, case: &str, s: &Scrapes, p99_target: bool, judged: bool) {
    let latency = Samples::new(s.latency.clone());
    let health = Samples::new(s.health.clone());
    for (metric, pct) in [
        ("scrape latency p50", 50.0),
        ("scrape latency p99", 99.0),
        ("scrape latency max", 100.0),
    ] {
        let v = latency.percentile(pct);
        let base = health.percentile(pct);
        let mut line = Line::new(case, metric)
            .ours(stats::ms(v))
            .baseline(stats::ms(base))
            .ratio(stats::ratio(v, base));
        if pct == 99.0 && p99_target {
            let verdict = if judged {
                Verdict::judge(v <= 10.0)
            } else {
                Verdict::Info
            };
            line = line.target("≤ 10 ms", verdict);
        }
        figure.lines.push(line);
    }
    let total = s.latency.len() + s.failed.len();
    figure.lines.push(
        Line::new(case, "scrapes answered")
            .ours(format!("{} of {total}", s.latency.len()))
            .target(
                "all",
                if judged {
                    Verdict::judge(s.failed.is_empty() && total > 0)
                } else {
                    Verdict::Info
                },
            ),
    );
    if let Some(cpu) = s.service_cpu.filter(|_| !s.latency.is_empty()) {
        let per = cpu.as_secs_f64() * 1e3 / s.latency.len() as f64;
        figure
            .lines
            .push(Line::new(case, "service CPU per scrape (user + system)").ours(stats::ms(per)));
    }
    figure.lines.push(
        Line::new(case, "exposition size (last scrape)").ours(format!(
            "{:.0} KiB, {} lines",
            s.bytes as f64 / 1024.0,
            s.lines
        )),
    );
    if let Some(first) = s.failed.first() {
        figure
            .notes
            .push(format!("{} scrapes failed, first: {first}", s.failed.len()));
    }
}

fn lateness_lines(
    figure: &mut Figure,
    case: &str,
    a: &FireStats,
    b: &FireStats,
    c: &FireStats,
    judged: bool,
) {
    let case = format!("{case}, lateness B (metrics) vs A; C");
    for (metric, pct) in [
        ("lateness p50", 50.0),
        ("lateness p99", 99.0),
        ("lateness max", 100.0),
    ] {
        let (va, vb, vc) = (
            a.lateness.percentile(pct),
            b.lateness.percentile(pct),
            c.lateness.percentile(pct),
        );
        let mut line = Line::new(&case, metric)
            .ours(late(vb))
            .baseline(format!("{}; C {}", late(va), late(vc)))
            .ratio(stats::ratio(vb.max(1.0), va.max(1.0)));
        if pct == 99.0 {
            let bound = va.max(vc) + (va - vc).abs() + 1.0;
            let verdict = if judged {
                Verdict::judge(vb <= bound)
            } else {
                Verdict::Info
            };
            line = line.target(format!("≤ {} (within noise)", stats::ms(bound)), verdict);
        }
        figure.lines.push(line);
    }
    for (metric, vb, va, vc) in [
        ("missed fires", b.missed, a.missed, c.missed),
        ("doubled fires", b.doubled, a.doubled, c.doubled),
    ] {
        figure.lines.push(
            Line::new(&case, metric)
                .ours(vb.to_string())
                .baseline(format!("{va}; C {vc}"))
                .target(
                    "0",
                    if judged {
                        Verdict::judge(vb == 0)
                    } else {
                        Verdict::Info
                    },
                ),
        );
    }
    figure.notes.push(format!(
        "fires started in the window: A {}, B {}, C {}; skipped (overlap, previous cycle still running): A {}, B {}, C {}",
        a.lateness.len(),
        b.lateness.len(),
        c.lateness.len(),
        a.skipped,
        b.skipped,
        c.skipped
    ));
}

/// Lateness read off the TSV, which has millisecond resolution (as figure 1 shows it).
fn late(ms: f64) -> String {
    if ms < 1.0 {
        "< 1 ms".into()
    } else {
        stats::ms(ms)
    }
}

/// The scrape-cost run (see the module doc).
fn quiet_scrapes(n: usize, secs: u64) -> Result<Scrapes, Unmeasured> {
    let root = crate::sys::tempdir()?;
    let dir = root.path().join("instance");
    let entries = |cron: &str| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| json!({ "id": format!("f-{i:04}"), "task": "fire", "cron": cron, "modes": ["noop"] }))
            .collect()
    };
    service::trivial_instance(&dir, entries("* * * * * *"), n.min(service::FIRE_SLOTS))?;
    let addr = free_address()?;
    let serve = service::start_ready_with(&dir, root.path(), &["--metrics", &addr.to_string()])?;
    std::thread::sleep(FIRE_FIRST);
    let away = format!("0 {} * * * *", lateness::far_minute());
    let text = crate::instance::schedules_json(entries(&away), n.min(service::FIRE_SLOTS));
    crate::instance::write(&dir, "schedules.json.new", &text)?;
    std::fs::rename(dir.join("schedules.json.new"), dir.join("schedules.json"))
        .map_err(|e| format!("cannot rename schedules.json.new: {e}"))?;
    wait_drained(addr, n)?;
    let before = cpu_time(serve.pid())?;
    let mut scrapes = scrape(addr, lateness::window_from_now(secs));
    scrapes.service_cpu = Some(cpu_time(serve.pid())?.saturating_sub(before));
    serve.stop(Duration::from_secs(35))?;
    Ok(scrapes)
}

/// Waits until the service at `addr` has reloaded its `n` schedules away and every fire
/// dispatched before (a second's 1,000 fires take seconds through 64 slots) has ended, as
/// its own gauges say.
fn wait_drained(addr: std::net::SocketAddr, n: usize) -> Result<(), String> {
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body = ureq::get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| e.to_string())?;
        let idle = body
            .lines()
            .any(|l| l == "loop_orchestrator_running_cycles 0")
            && body
                .lines()
                .any(|l| l == "loop_orchestrator_waiting_fires 0")
            && body.contains("loop_orchestrator_reloads_total{result=\"ok\"} 1");
        if idle {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{n} schedules did not drain within 120 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// User + system CPU time of process `pid` so far (`/proc/PID/stat` fields 14 and 15,
/// proc(5)).
fn cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').ok_or("bad stat")? + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().map_err(|e| e.to_string())?
        + fields[12].parse::<u64>().map_err(|e| e.to_string())?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// The 1-minute load average, from /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// A loopback address no one listens on now.
fn free_address() -> Result<std::net::SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Scrapes `/metrics` every [`SCRAPE_EVERY`] over the whole seconds of `window`.
fn scrape(addr: std::net::SocketAddr, window: std::ops::Range<i64>) -> Scrapes {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("http://{addr}/metrics");
    let health = format!("http://{addr}/healthz");
    let mut scrapes = Scrapes::default();
    lateness::sleep_until_second(window.start, Duration::ZERO);
    let start = Instant::now();
    let end = start + Duration::from_secs((window.end - window.start).max(0) as u64);
    let mut next = start;
    while next < end {
        let sent = Instant::now();
        match agent
            .get(&url)
            .header("Accept", PROMETHEUS_ACCEPT)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
        {
            Ok(body) if body.contains("loop_orchestrator_build_info") => {
                scrapes.latency.push(sent.elapsed().as_secs_f64() * 1e3);
                scrapes.bytes = body.len();
                scrapes.lines = body.lines().count();
            }
            Ok(body) => scrapes
                .failed
                .push(format!("no build_info in {} bytes", body.len())),
            Err(e) => scrapes.failed.push(e.to_string()),
        }
        let sent = Instant::now();
        if agent
            .get(&health)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .is_ok()
        {
            scrapes.health.push(sent.elapsed().as_secs_f64() * 1e3);
        }
        next += SCRAPE_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    scrapes
}
