//! Realistic task_timing.tsv files for the report figure and for looking at the report's
//! page: several schedules and modes, every status, failure streaks and escalations,
//! manual runs, lateness (mostly milliseconds, a catch-up now and then), costs, and notes
//! that carry markup, quotes and non-ASCII text. Optionally the damage a real file can
//! show: a line torn by a crash, lines from another tool, garbage bytes, a torn last line.
//!
//! The rows go through `TimingFile::append_all`, the writer the service uses, so the file
//! is in the exact format a reader meets; the damage is appended as raw bytes.
//! Deterministic for a seed: the same arguments give the same bytes.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use loop_orchestrator::timing::{CYCLE_MODE, Priority, Row, Status, TimingFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One schedule of the generated instance.
struct Plan {
    id: &'static str,
    modes: &'static [&'static str],
    /// Fires per unit of time, relative to the other schedules.
    weight: u32,
    /// Whether its modes are agents that report a cost.
    agent: bool,
    /// Typical duration of a mode run, in seconds.
    typical_s: f64,
}

const PLANS: [Plan; 6] = [
    Plan {
        id: "main-loop",
        modes: &[
            "implementation",
            "validation",
            "quality",
            "integration",
            "planning",
        ],
        weight: 6,
        agent: true,
        typical_s: 240.0,
    },
    Plan {
        id: "hotfix-watch",
        modes: &["implementation"],
        weight: 12,
        agent: true,
        typical_s: 20.0,
    },
    Plan {
        id: "nightly-tests",
        modes: &["validation"],
        weight: 2,
        agent: false,
        typical_s: 180.0,
    },
    Plan {
        id: "docs-sweep",
        modes: &["implementation", "quality"],
        weight: 3,
        agent: true,
        typical_s: 90.0,
    },
    Plan {
        id: "deps-audit",
        modes: &["implementation", "validation", "integration"],
        weight: 1,
        agent: true,
        typical_s: 120.0,
    },
    Plan {
        id: "release-train-with-a-rather-long-schedule-id",
        modes: &["integration", "planning"],
        weight: 1,
        agent: false,
        typical_s: 60.0,
    },
];

const OK_NOTES: [&str; 6] = [
    "tests pass: 312 passed; 0 failed; 4 ignored",
    "HANDOFF: next: item 4. Wire the report subcommand (TODO.md:12)",
    "MEMORY: `cargo nextest run -E 'test(report)'` runs the report tests",
    "clippy clean; fmt clean",
    "merged 3 commits into main; pushed",
    "no changes needed",
];
const FAILED_NOTES: [&str; 4] = [
    "exit 101: cargo test failed: 3 failed (report::tests::streak_counts_timeouts)",
    "exit 1: error[E0308]: mismatched types --> src/report/mod.rs:212:9",
    "exit 2: agent CLI refused the prompt: rate limited (429), retry after 60 s",
    "exit 137 after SIGKILL: out of memory while linking",
];
/// Notes a hostile or careless mode could print: a page must show these as text.
const MARKUP_NOTES: [&str; 5] = [
    "agent said: <script>alert(\"pwned\")</script> and stopped",
    "README now has <img src=x onerror=alert(1)> in it",
    "quotes \"double\" and 'single' & ampersands; a </title></svg><b>break-out</b> try",
    "ünïcödé — 日本語のメモ — 🦀 — שלום — a note from a non-ASCII world",
    "javascript:alert(document.cookie) href=\"http://example.invalid/x.png\"",
];

fn long_note() -> String {
    let mut note = String::from("BLOCKED: ");
    while note.chars().count() < 480 {
        note.push_str("the staging database refuses connections from this host; ");
    }
    note.chars().take(480).collect()
}

/// The bytes a crash, another tool and a stray binary write leave in a timing file, as
/// (line text, what it is). The generator inserts them between rows.
pub const DAMAGE: [(&str, &str); 4] = [
    // A writer crashed mid-row; the next append terminated the line.
    (
        "2026-11-21T10:10:00.000Z\t2026-11-21T10:10:01.250Z\t2026-11-21T10",
        "torn",
    ),
    ("date,schedule,result\n2026-11-20,backup,ok", "foreign"),
    (
        "\u{1b}[31mERROR\u{1b}[0m something else wrote here",
        "foreign",
    ),
    (
        "\t2026-11-21T10:00:00.000Z\t2026-11-21T10:00:01.000Z\t1000\tschedule\tx\tc\tcycle\t1\tfine\t0\t\tunknown status",
        "bad status",
    ),
];

/// Writes a timing file of exactly `rows` rows (header excluded) whose cycles end at
/// `end` and start about `span` earlier. With `damage`, the lines of [`DAMAGE`] and a
/// line of invalid UTF-8 are inserted at fixed fractions of the file, and a torn last
/// line ends it; these are not counted in `rows`. Returns the number of damaged lines.
pub fn write(
    path: &Path,
    rows: usize,
    end: DateTime<Utc>,
    span: TimeDelta,
    seed: u64,
    damage: bool,
) -> Result<usize, String> {
    let all = generate(rows, end, span, seed);
    let file = TimingFile::new(path).without_sync();
    let io = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    file.ensure_header().map_err(|e| e.to_string())?;
    if !damage {
        file.append_all(&all).map_err(|e| e.to_string())?;
        return Ok(0);
    }
    let mut damaged = 0;
    let parts = DAMAGE.len() + 1;
    let mut raw = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io)?;
    for (i, chunk) in all.chunks(all.len().div_ceil(parts).max(1)).enumerate() {
        file.append_all(chunk).map_err(|e| e.to_string())?;
        if let Some((text, _)) = DAMAGE.get(i) {
            writeln!(raw, "{text}").map_err(io)?;
            damaged += text.lines().count();
        } else {
            raw.write_all(b"\xff\xfe garbage \xc3\x28\n").map_err(io)?;
            damaged += 1;
        }
    }
    raw.write_all(b"2026-11-21T10:20:00.000Z\t2026-11-21T10:2")
        .map_err(io)?;
    Ok(damaged + 1)
}

/// The rows, in the order their cycles finish, as the service appends them.
pub fn generate(rows: usize, end: DateTime<Utc>, span: TimeDelta, seed: u64) -> Vec<Row> {
    // Rows per unit of weight: a cycle writes its modes and a cycle row. Failures stop
    // pipelines and escalations pause schedules, so a short first guess is scaled up.
    let rows_per_round: f64 = PLANS
        .iter()
        .map(|p| f64::from(p.weight) * (p.modes.len() as f64 + 1.0))
        .sum();
    let mut rounds = (rows as f64 / rows_per_round).max(1.0);
    loop {
        let mut out = rows_for(rounds, end, span, seed);
        if out.len() >= rows {
            // The last `rows` rows: the file ends with whole cycles, as a file rotated
            // long ago begins with the end of one.
            out.drain(..out.len() - rows);
            return out;
        }
        rounds *= rows as f64 / out.len().max(1) as f64 * 1.05;
    }
}

fn rows_for(rounds: f64, end: DateTime<Utc>, span: TimeDelta, seed: u64) -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = end - span;
    let mut cycles: Vec<(DateTime<Utc>, Vec<Row>)> = Vec::new();
    for (index, plan) in PLANS.iter().enumerate() {
        let fires = (rounds * f64::from(plan.weight)).ceil() as i64 + 2;
        let every_ms = (span.num_milliseconds() / fires).max(1);
        let mut failing = false;
        let mut streak = 0;
        let mut paused_until = start;
        for k in 0..fires {
            let at = start + TimeDelta::milliseconds(every_ms * k + index as i64 * 7_000);
            if at < paused_until {
                continue;
            }
            // Bad periods: failures cluster, as they do when a dependency is down.
            if rng.random_bool(if failing { 0.15 } else { 0.02 }) {
                failing = !failing;
            }
            let (rows, status) = cycle(&mut rng, plan, at, failing);
            streak = if status.counts_as_failure() {
                streak + 1
            } else if status == Status::Ok {
                0
            } else {
                streak
            };
            let finished = rows.last().map_or(at, |r| r.finished_at);
            cycles.push((finished, rows));
            if streak >= 3 {
                let mut row = escalated_row(plan.id, finished);
                row.started_at = finished + TimeDelta::milliseconds(5);
                row.finished_at = row.started_at;
                cycles.push((row.finished_at, vec![row]));
                streak = 0;
                failing = false;
                // Until someone resumes it: twenty fires later.
                paused_until = finished + TimeDelta::milliseconds(every_ms * 20);
            }
        }
    }
    cycles.sort_by_key(|(finished, _)| *finished);
    cycles.into_iter().flat_map(|(_, rows)| rows).collect()
}

fn escalated_row(schedule: &str, at: DateTime<Utc>) -> Row {
    Row {
        scheduled_at: None,
        started_at: at,
        finished_at: at,
        duration_ms: 0,
        priority: Priority::Schedule,
        schedule: schedule.into(),
        cycle: format!("{}-{schedule}", at.format("%Y%m%dT%H%M%SZ")),
        mode: CYCLE_MODE.into(),
        attempt: 1,
        status: Status::Escalated,
        exit_code: None,
        cost_usd: None,
        note: "escalated after 3 failed cycles: paused until its entry changes or `resume`".into(),
    }
}

/// The rows of one cycle fired at `at`, and the cycle's status.
fn cycle(rng: &mut StdRng, plan: &Plan, at: DateTime<Utc>, failing: bool) -> (Vec<Row>, Status) {
    let manual = rng.random_bool(0.01);
    let scheduled_at = (!manual).then_some(at);
    // Lateness: milliseconds mostly; a busy machine now and then; a catch-up rarely.
    let late_ms = match rng.random_range(0..1000) {
        0 => rng.random_range(60_000..1_800_000),
        1..=20 => rng.random_range(100..5_000),
        _ => rng.random_range(0..4),
    };
    let started = at + TimeDelta::milliseconds(late_ms);
    let cycle_id = format!("{}-{}", at.format("%Y%m%dT%H%M%SZ"), plan.id);
    let base = |mode: &str, from: DateTime<Utc>| Row {
        scheduled_at,
        started_at: from,
        finished_at: from,
        duration_ms: 0,
        priority: if manual {
            Priority::Todo
        } else {
            Priority::Schedule
        },
        schedule: plan.id.into(),
        cycle: cycle_id.clone(),
        mode: mode.into(),
        attempt: 1,
        status: Status::Ok,
        exit_code: Some(0),
        cost_usd: None,
        note: String::new(),
    };
    if rng.random_bool(0.03) {
        let mut row = base(CYCLE_MODE, started);
        row.status = Status::Skipped;
        row.exit_code = None;
        row.note = "overlap skip: the previous cycle of this schedule is still running".into();
        return (vec![row], Status::Skipped);
    }
    let mut rows = Vec::new();
    let mut now = started;
    let mut status = Status::Ok;
    let mut note = String::from("all modes ok");
    let mut cost: Option<f64> = None;
    for mode in plan.modes {
        // Log-uniform around the typical duration: most runs near it, a few far off.
        let factor = (rng.random_range(-2.0f64..1.5)).exp();
        let duration_ms = (plan.typical_s * factor * 1_000.0) as u64 + rng.random_range(0..900);
        let mut row = base(mode, now);
        row.duration_ms = duration_ms;
        row.finished_at = now + TimeDelta::milliseconds(duration_ms as i64);
        if plan.agent {
            let c =
                (duration_ms as f64 / 60_000.0 * rng.random_range(0.02..0.2) * 1e4).round() / 1e4;
            row.cost_usd = Some(c);
            *cost.get_or_insert(0.0) += c;
        }
        let roll: f64 = rng.random();
        let fail_p = if failing { 0.6 } else { 0.015 };
        row.note = if roll < fail_p {
            row.status = match rng.random_range(0..10) {
                0..=5 => Status::Failed,
                6..=7 => Status::Timeout,
                _ => Status::Blocked,
            };
            match row.status {
                Status::Failed => {
                    row.exit_code = Some(1);
                    FAILED_NOTES[rng.random_range(0..FAILED_NOTES.len())].into()
                }
                Status::Timeout => {
                    row.exit_code = None;
                    "timed out after 20m 00s; process group terminated, then killed".into()
                }
                _ => long_note(),
            }
        } else if rng.random_bool(0.004) {
            row.status = Status::Interrupted;
            row.exit_code = None;
            "shutdown: stopped after the 30 s grace".into()
        } else if rng.random_bool(0.03) {
            MARKUP_NOTES[rng.random_range(0..MARKUP_NOTES.len())].into()
        } else {
            OK_NOTES[rng.random_range(0..OK_NOTES.len())].into()
        };
        now = row.finished_at + TimeDelta::milliseconds(rng.random_range(1..40));
        let stop = row.status != Status::Ok;
        if stop {
            status = row.status;
            note = format!("{mode}: {}", row.note);
        } else if row.note.contains('<') || row.note.contains('ü') {
            note = format!("{mode}: {}", row.note);
        }
        rows.push(row);
        if stop {
            break;
        }
    }
    let first = rows.first().map_or(started, |r| r.started_at);
    let last = rows.last().map_or(started, |r| r.finished_at);
    let mut row = base(CYCLE_MODE, first);
    row.finished_at = last;
    row.duration_ms = (last - first).num_milliseconds().max(0) as u64;
    row.status = status;
    row.exit_code = None;
    row.cost_usd = cost;
    row.note = note;
    rows.push(row);
    (rows, status)
}

/// `__timing-log ROWS FILE [--days N] [--damage] [--seed S]`: writes a generated file
/// whose cycles end now (for looking at the report's page by hand).
pub fn command(args: &[String]) -> Result<(), String> {
    let usage = "usage: bench __timing-log ROWS FILE [--days N] [--damage] [--seed S]";
    let rows: usize = args.first().and_then(|a| a.parse().ok()).ok_or(usage)?;
    let path = args.get(1).ok_or(usage)?;
    let (mut days, mut damage, mut seed) = (6.0f64, false, 1u64);
    let mut rest = args[2..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--damage" => damage = true,
            "--days" => days = rest.next().and_then(|d| d.parse().ok()).ok_or(usage)?,
            "--seed" => seed = rest.next().and_then(|s| s.parse().ok()).ok_or(usage)?,
            _ => return Err(usage.into()),
        }
    }
    let _ = std::fs::remove_file(path);
    let span = TimeDelta::milliseconds((days * 86_400_000.0) as i64);
    let bad = write(Path::new(path), rows, Utc::now(), span, seed, damage)?;
    eprintln!("wrote {path}: {rows} rows, {bad} damaged lines");
    Ok(())
}
