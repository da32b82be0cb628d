//! `soak`: many schedules under `serve` for a bounded time, with edits of schedules.json
//! every few seconds, then an account of every fire, row and memory entry.
//!
//! The instance: N schedules (default 500) firing every 1, 2 or 5 seconds (`*/P * * * * *`,
//! P dividing 60, so a schedule's instants are exactly the multiples of P seconds), overlap
//! skip/queue/parallel mixed, `max_concurrent_cycles` 32; modes are the fake agent sleeping
//! 0–3 s, failing 10 %, some printing MEMORY tokens, some timing out (timeout 1 s, sleep 2 s).
//!
//! Timeline: `serve` starts with every schedule disabled (a quiet baseline of fds and RSS),
//! one edit enables them all, then every 3–5 s a rename-over edit changes the period of a
//! random schedule, and about one edit in five is broken (unknown field, bad cron, a
//! half-written file) and must be rejected, then fixed. Twice the load pauses for a quiet
//! sample — after warm-up (a sixth of the run, 1 to 10 min) and at the end: one edit
//! disables every schedule, the running cycles drain, idle threads retire, a sample is taken,
//! one edit enables them again (the instants of a disabled window are not checked). After the
//! end's pause the load runs 8 s more and SIGTERM stops the service under load.
//!
//! Verdicts: every TSV line parses; for each schedule never edited, the cycle rows'
//! `scheduled_at` from its first to its last are every multiple of its period exactly once
//! (an escalated schedule is paused by design: from its `escalated` row to its next fire);
//! for edited ones no instant twice and every instant on one of its periods; every cycle
//! has one cycle row; every MEMORY token of the ledger is in the memory file or the archive;
//! RSS growth after warm-up (the quiet pause after warm-up vs. the quiet end: under load the
//! resident size follows the queue of fires waiting for a slot, so loaded samples are
//! reported beside it, not judged) under 2 MiB; open fds equal at the quiet start and the
//! quiet end (±2); no rejected edit applied and every broken edit reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use serde_json::{Value, json};

use crate::util::{self, Report, Res};

const PERIODS: [u32; 6] = [1, 2, 3, 4, 5, 6];
const WARM_UP: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const RSS_GROWTH_LIMIT_KB: i64 = 2048;
const FD_SLACK: i64 = 2;

pub struct Options {
    pub minutes: f64,
    pub schedules: usize,
}

#[derive(Clone)]
struct Sched {
    id: String,
    period: u32,
    modes: Vec<&'static str>,
    overlap: &'static str,
    max_failures: Option<u32>,
}

#[derive(Clone, Copy, Debug)]
enum Broken {
    UnknownField,
    BadCron,
    HalfWritten,
}

fn config(scheds: &[Sched], enabled: bool, broken: Option<(Broken, usize)>) -> String {
    let list: Vec<Value> = scheds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut v = json!({
                "id": s.id,
                "task": format!("soak schedule {}", s.id),
                "cron": format!("*/{} * * * * *", s.period),
                "modes": s.modes,
                "overlap": s.overlap,
                "enabled": enabled,
            });
            if let Some(n) = s.max_failures {
                v["max_failures"] = json!(n);
            }
            match broken {
                Some((Broken::UnknownField, at)) if at == i => v["crn"] = json!("* * * * * *"),
                Some((Broken::BadCron, at)) if at == i => {
                    v["cron"] = json!(format!("*/{} * * * * * * *", s.period))
                }
                _ => {}
            }
            v
        })
        .collect();
    let doc = json!({
        "version": 1,
        "timezone": "UTC",
        "defaults": { "timeout": "30s", "overlap": "skip", "max_failures": 1_000_000 },
        "memory": { "max_lines": 300, "target_lines": 240 },
        "max_concurrent_cycles": 32,
        "shutdown_grace": "20s",
        "schedules": list,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    if let Some((Broken::HalfWritten, _)) = broken {
        text.truncate(text.len() / 2);
    }
    text
}

fn build(dir: &Path, count: usize, rng: &mut impl Rng) -> Res<Vec<Sched>> {
    let agent = util::write_agent(dir)?;
    let agent = agent.to_string_lossy().into_owned();
    let ledger = dir.join("ledger");
    std::fs::create_dir_all(&ledger).map_err(|e| e.to_string())?;
    let ledger = ledger.to_string_lossy().into_owned();
    util::write_mode(
        dir,
        "quick",
        &[&agent],
        "env = { REL_SLEEP_MS = \"0-3000\", REL_FAIL_PCT = \"10\" }",
    )?;
    util::write_mode(
        dir,
        "mem",
        &[&agent],
        &format!(
            "env = {{ REL_SLEEP_MS = \"0-3000\", REL_FAIL_PCT = \"10\", REL_TOKENS = \"1-3\", REL_LEDGER = {ledger:?} }}"
        ),
    )?;
    util::write_mode(
        dir,
        "slow",
        &[&agent],
        &format!(
            "timeout = \"1s\"\nkill_grace = \"1s\"\nenv = {{ REL_SLEEP_MS = \"2000-2000\", REL_TOKENS = \"1-1\", REL_LEDGER = {ledger:?} }}"
        ),
    )?;
    util::write(&dir.join("TODO.md"), "# TODO\n- [ ] soak\n")?;
    let mut scheds = Vec::new();
    for i in 0..count {
        let period = match rng.random_range(0..10) {
            0..=1 => 1,
            2..=4 => 2,
            _ => 5,
        };
        let modes: Vec<&'static str> = match rng.random_range(0..20) {
            0..=11 => vec!["quick"],
            12..=16 => vec!["mem"],
            17..=18 => vec!["mem", "quick"],
            _ => vec!["slow", "mem"],
        };
        // Parallel only on the slowest period: under saturation a parallel schedule's waiting
        // fires are not bounded by overlap, only by the slots.
        let overlap = match rng.random_range(0..20) {
            0..=11 => "skip",
            12..=17 => "queue",
            _ if period == 5 => "parallel",
            _ => "skip",
        };
        // A few schedules escalate (failing modes, max_failures 3); an edit lifts that.
        let max_failures = (i % 50 == 7).then_some(3);
        scheds.push(Sched {
            id: format!("s{i:03}"),
            period,
            modes,
            overlap,
            max_failures,
        });
    }
    Ok(scheds)
}

/// `serve`, or with `REL_HEAPTRACK=FILE` `serve` under heaptrack (a heap profile of the whole
/// run, written to FILE.zst: `heaptrack --analyze FILE.zst`).
fn serve_command(bin: &Path, dir: &Path) -> std::process::Command {
    let serve = util::orchestrator(bin, dir, &["serve"]);
    let Some(out) = std::env::var_os("REL_HEAPTRACK") else {
        return serve;
    };
    let mut wrapped = std::process::Command::new("heaptrack");
    wrapped.arg("-o").arg(out).arg(serve.get_program());
    wrapped.args(serve.get_args());
    for (key, value) in serve.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.stdin(std::process::Stdio::null());
    wrapped
}

/// The pid of the service itself: the spawned one, or under heaptrack its child running `bin`.
fn serve_pid(bin: &Path, spawned: i32) -> Res<i32> {
    if std::env::var_os("REL_HEAPTRACK").is_none() {
        return Ok(spawned);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let found = util::children(spawned).into_iter().find(|&child| {
            std::fs::read_link(format!("/proc/{child}/exe")).is_ok_and(|exe| exe == bin)
        });
        if let Some(pid) = found {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("heaptrack did not start the service".into())
}

pub fn run(opts: Options) -> Res<bool> {
    let bin = util::orchestrator_bin()?;
    let tmp = util::instance_dir("soak")?;
    let dir = tmp.path().to_path_buf();
    let mut rng = rand::rng();
    let mut scheds = build(&dir, opts.schedules, &mut rng)?;
    let schedules_path = dir.join("schedules.json");
    util::write(&schedules_path, &config(&scheds, false, None))?;
    let log = dir.join("serve.log");
    println!(
        "soak: {} schedules, {} min, instance {}",
        scheds.len(),
        opts.minutes,
        dir.display()
    );

    let mut serve = util::spawn_logged(serve_command(&bin, &dir), &log)?;
    let pid = serve_pid(&bin, serve.id() as i32)?;
    if !util::wait_for(Duration::from_secs(30), || {
        util::read_lossy(&log).contains("serving")
    }) {
        util::signal(pid, Signal::SIGKILL);
        return Err(format!("serve did not start:\n{}", util::read_lossy(&log)));
    }
    std::thread::sleep(Duration::from_secs(3));
    let quiet_start = util::sample(pid, Duration::ZERO).ok_or("serve is gone")?;

    // periods[id] = every period the schedule had; edited = ids whose period changed.
    let mut periods: HashMap<String, BTreeSet<u32>> = scheds
        .iter()
        .map(|s| (s.id.clone(), BTreeSet::from([s.period])))
        .collect();
    let mut edited: HashSet<String> = HashSet::new();
    util::write_by_rename(&schedules_path, &config(&scheds, true, None))?;
    let started = Instant::now();
    let total = Duration::from_secs_f64(opts.minutes * 60.0);
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    let mut next_edit = Duration::from_secs(3);
    let mut pending_fix: Option<Duration> = None;
    let (mut edits, mut broken_edits, mut fixes) = (0usize, 0usize, 0usize);
    let mut alive = true;
    // The quiet pause after warm-up: the reference the quiet end's RSS is compared with.
    let warm_at = warm_up(total);
    let mut quiet_warm: Option<util::Sample> = None;
    let mut paused: Vec<(i64, i64)> = Vec::new();
    let mut drained = true;
    while started.elapsed() < total {
        let now = started.elapsed();
        if quiet_warm.is_none() && pending_fix.is_none() && now >= warm_at {
            let quiet = quiesce(&schedules_path, &scheds, pid, started)?;
            drained &= quiet.drained;
            paused.push(quiet.paused);
            match quiet.sample {
                Some(s) => quiet_warm = Some(s),
                None => {
                    alive = false;
                    break;
                }
            }
            next_sample = started.elapsed();
            next_edit = next_sample + Duration::from_secs(3);
            continue;
        }
        if now >= next_sample {
            match util::sample(pid, now) {
                Some(s) => samples.push(s),
                None => {
                    alive = false;
                    break;
                }
            }
            next_sample = now + SAMPLE_EVERY;
        }
        if let Some(at) = pending_fix {
            if now >= at {
                util::write_by_rename(&schedules_path, &config(&scheds, true, None))?;
                fixes += 1;
                pending_fix = None;
                next_edit = now + Duration::from_millis(rng.random_range(3000..5000));
            }
        } else if now >= next_edit {
            let i = rng.random_range(0..scheds.len());
            if rng.random_range(0..5) == 0 {
                let kind = match rng.random_range(0..3) {
                    0 => Broken::UnknownField,
                    1 => Broken::BadCron,
                    _ => Broken::HalfWritten,
                };
                util::write_by_rename(&schedules_path, &config(&scheds, true, Some((kind, i))))?;
                broken_edits += 1;
                pending_fix = Some(now + Duration::from_millis(rng.random_range(2000..4000)));
            } else {
                let old = scheds[i].period;
                let period = loop {
                    let p = PERIODS[rng.random_range(0..PERIODS.len())];
                    if p != old {
                        break p;
                    }
                };
                scheds[i].period = period;
                periods
                    .entry(scheds[i].id.clone())
                    .or_default()
                    .insert(period);
                edited.insert(scheds[i].id.clone());
                util::write_by_rename(&schedules_path, &config(&scheds, true, None))?;
                edits += 1;
                next_edit = now + Duration::from_millis(rng.random_range(3000..5000));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if pending_fix.is_some() {
        util::write_by_rename(&schedules_path, &config(&scheds, true, None))?;
        fixes += 1;
    }
    let loaded_for = started.elapsed();

    // The quiet end; then everything runs again for 8 s and SIGTERM stops the service under
    // load, so the shutdown path (grace, interrupted modes, fires waiting for a slot or
    // queued) is accounted for too.
    let mut quiet_end = None;
    if alive {
        std::thread::sleep(Duration::from_secs(1));
        let quiet = quiesce(&schedules_path, &scheds, pid, started)?;
        drained &= quiet.drained;
        paused.push(quiet.paused);
        quiet_end = quiet.sample;
        std::thread::sleep(Duration::from_secs(8));
    } else {
        drained = false;
    }
    let stop_at = chrono::Utc::now();
    util::signal(pid, Signal::SIGTERM);
    let exit = util::wait_timeout(&mut serve, Duration::from_secs(90));
    let stop_took = chrono::Utc::now() - stop_at;
    if exit.is_none() {
        util::signal(pid, Signal::SIGKILL);
        let _ = serve.wait();
    }

    let mut report = Report::default();
    report.info("instance", dir.display());
    report.info(
        "loaded for",
        format!("{:.1} min", loaded_for.as_secs_f64() / 60.0),
    );
    report.check("serve stayed up until SIGTERM", alive, alive);
    report.check(
        "serve exit after SIGTERM",
        format!("{exit:?}"),
        exit.is_some_and(|s| s.code() == Some(0)),
    );
    report.check(
        "running cycles drained after the disabling edit",
        drained,
        drained,
    );
    report.info(
        "SIGTERM under load: stop took",
        format!(
            "{} ms (shutdown_grace 20 s); SIGTERM at {}",
            stop_took.num_milliseconds(),
            stop_at.to_rfc3339()
        ),
    );
    verify_timing(&dir, &scheds, &periods, &edited, &paused, &mut report)?;
    verify_tokens(&dir, &mut report);
    verify_log(
        &util::read_lossy(&log),
        edits,
        broken_edits,
        fixes,
        &mut report,
    );
    verify_resources(
        &samples,
        Quiet {
            start: quiet_start,
            warm: quiet_warm,
            end: quiet_end,
        },
        warm_at,
        &mut report,
    );
    report.print("soak");
    let ok = report.violations.is_empty();
    util::finish_dir(tmp, !ok);
    Ok(ok)
}

/// When the quiet pause after warm-up comes: a sixth of the run, from 1 to 10 minutes.
fn warm_up(total: Duration) -> Duration {
    (total / 6).clamp(Duration::from_secs(60), Duration::from_secs(600))
}

struct Quieted {
    sample: Option<util::Sample>,
    drained: bool,
    /// Instants (ms) that may fire or not: from the disabling edit to a little after the
    /// enabling one (a reload's batching and slack).
    paused: (i64, i64),
}

/// A quiet pause: disable every schedule, let the running cycles end and idle threads
/// retire (the blocking pool keeps an idle thread 10 s), sample, enable everything again.
fn quiesce(schedules_path: &Path, scheds: &[Sched], pid: i32, started: Instant) -> Res<Quieted> {
    let from = chrono::Utc::now().timestamp_millis();
    util::write_by_rename(schedules_path, &config(scheds, false, None))?;
    let drained = util::wait_for(Duration::from_secs(60), || util::children(pid).is_empty());
    std::thread::sleep(Duration::from_secs(12));
    let sample = util::sample(pid, started.elapsed());
    util::write_by_rename(schedules_path, &config(scheds, true, None))?;
    Ok(Quieted {
        sample,
        drained,
        paused: (from, chrono::Utc::now().timestamp_millis() + 2_000),
    })
}

fn verify_timing(
    dir: &Path,
    scheds: &[Sched],
    periods: &HashMap<String, BTreeSet<u32>>,
    edited: &HashSet<String>,
    paused: &[(i64, i64)],
    report: &mut Report,
) -> Res<()> {
    let timing = util::read_timing(dir)?;
    report.info("rows", timing.rows.len());
    report.check(
        "TSV lines that do not parse",
        format!(
            "{} {}",
            timing.bad_lines.len(),
            timing
                .bad_lines
                .iter()
                .take(3)
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        timing.bad_lines.is_empty(),
    );
    let doubled_rows = util::doubled_rows(&timing.rows);
    report.check(
        "rows written twice (same cycle, mode, attempt)",
        format!(
            "{} {:?}",
            doubled_rows.len(),
            doubled_rows.iter().take(3).collect::<Vec<_>>()
        ),
        doubled_rows.is_empty(),
    );
    let cycles_with_row: HashSet<&str> = timing
        .rows
        .iter()
        .filter(|r| r.mode == "cycle")
        .map(|r| r.cycle.as_str())
        .collect();
    let unfinished: BTreeSet<&str> = timing
        .rows
        .iter()
        .filter(|r| r.mode != "cycle" && !cycles_with_row.contains(r.cycle.as_str()))
        .map(|r| r.cycle.as_str())
        .collect();
    report.check(
        "cycles with mode rows but no cycle row",
        format!(
            "{} {:?}",
            unfinished.len(),
            unfinished.iter().take(3).collect::<Vec<_>>()
        ),
        unfinished.is_empty(),
    );

    let mut instants: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut lateness = Vec::new();
    for row in timing.rows.iter().filter(|r| r.mode == "cycle") {
        *statuses.entry(row.status.to_string()).or_default() += 1;
        if let Some(at) = row.scheduled_at {
            instants
                .entry(row.schedule.as_str())
                .or_default()
                .push(at.timestamp_millis());
            if row.status != loop_orchestrator::timing::Status::Skipped {
                lateness.push((row.started_at - at).num_milliseconds().max(0) as u64);
            }
        }
    }
    report.info("cycle rows by status", format!("{statuses:?}"));
    // An escalated schedule is paused by design until its entry changes (an edit, or the
    // disable/enable at the end): its instants from the `escalated` row to its next fire
    // are not fires to expect.
    let mut escalations: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for row in timing
        .rows
        .iter()
        .filter(|r| r.mode == "cycle" && r.status == loop_orchestrator::timing::Status::Escalated)
    {
        escalations
            .entry(row.schedule.as_str())
            .or_default()
            .push(row.started_at.timestamp_millis());
    }
    report.info(
        "escalations (schedules / rows)",
        format!(
            "{} / {}",
            escalations.len(),
            escalations.values().map(Vec::len).sum::<usize>()
        ),
    );
    let mut paused_by_escalation = 0i64;
    let (mut checked_scheds, mut fires_checked, mut missed, mut doubled, mut off_grid) =
        (0usize, 0i64, 0i64, 0i64, 0i64);
    let mut missed_examples = Vec::new();
    let mut missed_by_overlap: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut edited_fires, mut edited_doubled) = (0usize, 0i64);
    let mut never_fired = 0;
    for s in scheds {
        let Some(list) = instants.get_mut(s.id.as_str()) else {
            never_fired += 1;
            continue;
        };
        list.sort_unstable();
        let allowed = &periods[&s.id];
        for &t in list.iter() {
            if t % 1000 != 0 || !allowed.iter().any(|p| (t / 1000) % i64::from(*p) == 0) {
                off_grid += 1;
            }
        }
        let dups = list.windows(2).filter(|w| w[0] == w[1]).count() as i64;
        if edited.contains(&s.id) {
            edited_fires += list.len();
            edited_doubled += dups;
            continue;
        }
        checked_scheds += 1;
        doubled += dups;
        let step = i64::from(s.period) * 1000;
        let (first, last) = (list[0], list[list.len() - 1]);
        fires_checked += (last - first) / step + 1;
        let mut expected = first;
        let set: HashSet<i64> = list.iter().copied().collect();
        // [escalated at, next fire after it) for each escalation of this schedule.
        let escalated: Vec<(i64, i64)> = escalations
            .get(s.id.as_str())
            .into_iter()
            .flatten()
            .map(|&at| {
                let next = list.iter().copied().find(|&t| t > at).unwrap_or(i64::MAX);
                (at, next)
            })
            .collect();
        while expected <= last {
            if escalated
                .iter()
                .any(|&(from, to)| from <= expected && expected < to)
            {
                fires_checked -= 1;
                paused_by_escalation += 1;
            } else if paused
                .iter()
                .any(|&(from, to)| (from..=to).contains(&expected))
            {
                fires_checked -= 1;
                if set.contains(&expected) {
                    fires_checked += 1;
                }
            } else if !set.contains(&expected) {
                missed += 1;
                *missed_by_overlap.entry(s.overlap).or_insert(0usize) += 1;
                if missed_examples.len() < 3 {
                    let at = chrono::DateTime::from_timestamp_millis(expected)
                        .map_or(expected.to_string(), |t| t.to_rfc3339());
                    missed_examples.push(format!("{} (overlap {}) at {at}", s.id, s.overlap));
                }
            }
            expected += step;
        }
    }
    report.info("schedules never fired", never_fired);
    report.info(
        "instants not expected: escalated, paused until the next fire",
        paused_by_escalation,
    );
    report.info("schedules never edited (checked exactly)", checked_scheds);
    report.info("fires checked (instants first..last)", fires_checked);
    report.check(
        "missed fires",
        format!("{missed} by overlap {missed_by_overlap:?}, e.g. {missed_examples:?}"),
        missed == 0,
    );
    report.check("doubled fires", doubled, doubled == 0);
    report.info("edited schedules: fires", edited_fires);
    report.check(
        "edited schedules: doubled fires",
        edited_doubled,
        edited_doubled == 0,
    );
    report.check("fires off their cron grid", off_grid, off_grid == 0);
    let mut late = lateness;
    if let Some(p50) = util::median(&mut late) {
        let p99 = late[(late.len() * 99 / 100).min(late.len() - 1)];
        report.info(
            "lateness started-scheduled of run cycles (p50 / p99 / max)",
            format!("{p50} / {p99} / {} ms", late[late.len() - 1]),
        );
    }
    Ok(())
}

fn verify_tokens(dir: &Path, report: &mut Report) {
    let ledger = util::read_ledger(&dir.join("ledger"));
    let mut committed = util::memory_tokens(dir);
    let mut archive = util::ArchiveScan::default();
    archive.update(&dir.join("persistent-memory.archive.md"));
    committed.extend(archive.tokens);
    let all: Vec<&String> = ledger.values().flatten().collect();
    let lost: Vec<&&String> = all.iter().filter(|t| !committed.contains(**t)).collect();
    report.info("MEMORY tokens printed (ledger)", all.len());
    report.check(
        "MEMORY tokens in neither memory nor archive",
        format!(
            "{} {:?}",
            lost.len(),
            lost.iter().take(3).collect::<Vec<_>>()
        ),
        lost.is_empty(),
    );
}

fn verify_log(log: &str, edits: usize, broken: usize, fixes: usize, report: &mut Report) {
    let log = util::strip_ansi(log);
    let rejected = log.matches("reload rejected").count();
    let reloaded = log.lines().filter(|l| l.contains("reloaded")).count();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    // A rejected reload logs each problem as `schedules.json:LINE:COL: ...`.
    let located = errors
        .iter()
        .filter(|l| {
            l.split("schedules.json:").nth(1).is_some_and(|rest| {
                let mut parts = rest.splitn(3, ':');
                parts.next().is_some_and(|n| n.parse::<u32>().is_ok())
                    && parts.next().is_some_and(|n| n.parse::<u32>().is_ok())
            })
        })
        .count();
    report.info(
        "edits: valid / broken / fixes",
        format!("{edits} / {broken} / {fixes}"),
    );
    report.check(
        "broken edits rejected (log)",
        format!("{rejected} of {broken}; {located} problems logged as schedules.json:line:col"),
        rejected >= broken && located >= broken,
    );
    report.info("reloads applied (log)", reloaded);
    let panics = log.matches("panicked").count();
    report.check("panics in the service log", panics, panics == 0);
    let other: Vec<&&str> = errors
        .iter()
        .filter(|l| !l.contains("schedules.json") && !l.contains("reload rejected"))
        .collect();
    report.check(
        "other ERROR lines in the service log",
        format!(
            "{} {:?}",
            other.len(),
            other.iter().take(2).collect::<Vec<_>>()
        ),
        other.is_empty(),
    );
}

/// The samples taken with every schedule disabled and the running cycles drained.
struct Quiet {
    start: util::Sample,
    warm: Option<util::Sample>,
    end: Option<util::Sample>,
}

fn verify_resources(
    samples: &[util::Sample],
    quiet: Quiet,
    warm_at: Duration,
    report: &mut Report,
) {
    report.info("samples", samples.len());
    if samples.is_empty() {
        return;
    }
    let fds_min = samples.iter().map(|s| s.fds).min().unwrap_or(0);
    let fds_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let th_min = samples.iter().map(|s| s.threads).min().unwrap_or(0);
    let th_max = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let hwm = samples.iter().map(|s| s.hwm_kb).max().unwrap_or(0);
    let last = samples[samples.len() - 1];
    let cpu = (last.cpu_ticks.saturating_sub(samples[0].cpu_ticks)) as f64
        / util::clock_ticks() as f64
        / (last.at.saturating_sub(samples[0].at))
            .as_secs_f64()
            .max(1.0);
    report.info(
        "serve CPU while loaded",
        format!("{:.0} % of one core", cpu * 100.0),
    );
    report.info(
        "open fds under load (min / max)",
        format!("{fds_min} / {fds_max} (cycles in flight hold pipes, logs, locks)"),
    );
    report.info("threads (min / max)", format!("{th_min} / {th_max}"));
    report.info("VmHWM", format!("{hwm} kB"));
    // Under load the resident size follows the queue of fires waiting for a slot (the heap's
    // high-water mark), so growth is judged between two quiet pauses: one after warm-up and
    // one at the end. The growth between loaded samples is reported beside it.
    let warm_at = quiet.warm.map_or(warm_at, |w| w.at) + WARM_UP;
    let warm: Vec<&util::Sample> = samples.iter().filter(|s| s.at >= warm_at).collect();
    if warm.len() >= 12 {
        let n = 6;
        let median_of = |part: &[&util::Sample], of: fn(&util::Sample) -> u64| {
            let mut values: Vec<u64> = part.iter().map(|s| of(s)).collect();
            util::median(&mut values).unwrap_or(0) as i64
        };
        let (first, end) = (&warm[..n], &warm[warm.len() - n..]);
        let growth = |of: fn(&util::Sample) -> u64| median_of(end, of) - median_of(first, of);
        report.info(
            "RSS under load, 1 min after the warm-up pause -> end (medians of 6 samples)",
            format!(
                "{} kB -> {} kB = {:+} kB (anonymous {:+} kB, mapped files {:+} kB)",
                median_of(first, |s| s.rss_kb),
                median_of(end, |s| s.rss_kb),
                growth(|s| s.rss_kb),
                growth(|s| s.anon_kb),
                growth(|s| s.file_kb)
            ),
        );
    }
    report.info(
        "RSS first / last sample under load",
        format!("{} kB / {} kB", samples[0].rss_kb, last.rss_kb),
    );
    let Quiet { start, warm, end } = quiet;
    match (warm, end) {
        (Some(warm), Some(end)) => {
            let growth = end.rss_kb as i64 - warm.rss_kb as i64;
            report.check(
                "RSS growth after warm-up (quiet pause after warm-up -> quiet end)",
                format!(
                    "{} kB at {:.1} min -> {} kB at {:.1} min = {growth:+} kB (anonymous {:+} kB; limit {RSS_GROWTH_LIMIT_KB})",
                    warm.rss_kb,
                    warm.at.as_secs_f64() / 60.0,
                    end.rss_kb,
                    end.at.as_secs_f64() / 60.0,
                    end.anon_kb as i64 - warm.anon_kb as i64
                ),
                growth < RSS_GROWTH_LIMIT_KB,
            );
        }
        (None, _) => report.info(
            "RSS growth after warm-up",
            "n/a: the run ended before its warm-up pause (run >= 2 min)",
        ),
        (_, None) => report.check("quiet end sample", "serve gone", false),
    }
    if let Some(end) = end {
        let fd_diff = end.fds as i64 - start.fds as i64;
        report.check(
            "open fds quiet start -> quiet end",
            format!(
                "{} -> {} ({fd_diff:+}, slack {FD_SLACK})",
                start.fds, end.fds
            ),
            fd_diff.abs() <= FD_SLACK,
        );
        report.info(
            "RSS / threads at the quiet start, after warm-up, at the end",
            format!(
                "{} kB / {} / {} kB; {} / {} / {} threads",
                start.rss_kb,
                warm.map_or("-".to_string(), |w| format!("{} kB", w.rss_kb)),
                end.rss_kb,
                start.threads,
                warm.map_or("-".to_string(), |w| w.threads.to_string()),
                end.threads
            ),
        );
    }
}
