//! Figure 9: `report` over a timing file of 1,000,000 rows (made by [`crate::timing_log`]:
//! six schedules, every status, costs, lateness, notes with markup), against `awk`
//! computing per-schedule row counts and sums of duration and cost over the same file.
//! Runs alternate between the two so a change in machine load hits both. The report's
//! per-schedule rows and cost are checked against awk's: a difference is an error.
//!
//! (Named for the TSV: `report.rs` of this crate writes BENCHMARKS.md.)

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{TimeDelta, Utc};

use crate::Size;
use crate::report::{Figure, Line, Verdict};
use crate::stats::{self, Samples};
use crate::sys;

/// The baseline's program: rows, duration and cost per schedule.
const AWK_PROGRAM: &str = "NR > 1 && NF == 13 { n[$6]++; d[$6] += $4; c[$6] += $12 } \
                           END { for (s in n) printf \"%s\\t%d\\t%d\\t%.6f\\n\", s, n[s], d[s], c[s] }";

fn awk(program: &str, file: &Path) -> Command {
    let mut c = Command::new(program);
    c.arg("-F\t").arg(AWK_PROGRAM).arg(file);
    c
}

/// Which awk `awk` is, for the table: its `--version` (or `-W version`) first line.
fn awk_name(program: &str) -> Option<String> {
    for flag in ["--version", "-W version"] {
        let out = Command::new(program)
            .args(flag.split(' '))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(first) = text.lines().next().filter(|l| !l.trim().is_empty()) {
            return Some(first.split(',').next().unwrap_or(first).trim().to_owned());
        }
    }
    None
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// (rows, cost) per schedule as awk counts them.
fn awk_counts(program: &str, file: &Path) -> Result<BTreeMap<String, (u64, f64)>, String> {
    let out = awk(program, file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            Some((
                cells.first()?.to_string(),
                (cells.get(1)?.parse().ok()?, cells.get(3)?.parse().ok()?),
            ))
        })
        .collect())
}

/// (rows, cost) per schedule as `report --json` counts them: every mode's runs, and every
/// mode's cost including the cycle rows' (awk sums every row).
fn report_counts(bin: &Path, dir: &Path) -> Result<BTreeMap<String, (u64, f64)>, String> {
    let out = Command::new(bin)
        .arg("--dir")
        .arg(dir)
        .args(["report", "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run report --json: {e}"))?;
    if !out.status.success() {
        return Err(format!("report --json failed: {}", out.status));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("report --json: {e}"))?;
    let mut counts = BTreeMap::new();
    for s in json["schedules"].as_array().into_iter().flatten() {
        let modes = s["modes"].as_array().into_iter().flatten();
        let (rows, cost) = modes.fold((0, 0.0), |(r, c), m| {
            (
                r + m["runs"].as_u64().unwrap_or(0),
                c + m["cost_usd"].as_f64().unwrap_or(0.0),
            )
        });
        counts.insert(
            s["schedule"].as_str().unwrap_or("").to_owned(),
            (rows, cost),
        );
    }
    Ok(counts)
}

fn same_counts(
    ours: &BTreeMap<String, (u64, f64)>,
    theirs: &BTreeMap<String, (u64, f64)>,
) -> Result<(), String> {
    let agree = ours.len() == theirs.len()
        && ours
            .iter()
            .zip(theirs)
            .all(|((a, (ra, ca)), (b, (rb, cb)))| {
                a == b && ra == rb && (ca - cb).abs() <= 1e-6 * ca.abs().max(1.0)
            });
    if agree {
        Ok(())
    } else {
        Err(format!(
            "report and awk disagree on rows or cost per schedule: report {ours:?}, awk {theirs:?}"
        ))
    }
}

struct Measured {
    text: Samples,
    html: Samples,
    awk: Samples,
    mawk: Option<Samples>,
    html_bytes: u64,
    in_process: Samples,
    timing_read: Samples,
}

pub fn figure(size: Size) -> Figure {
    let (rows, runs) = match size {
        Size::Full => (1_000_000, 11),
        Size::Quick => (1_000_000, 3),
        Size::Smoke => (10_000, 1),
    };
    let awk_label = awk_name("awk").unwrap_or_else(|| "awk".into());
    let mut figure = Figure::new(
        9,
        "Report over 1,000,000 rows",
        format!(
            "`loop-orchestrator --dir D report` (the table, to a pipe) and `report --html \
             page.html` over a task_timing.tsv of {rows} rows (six schedules over six days, \
             every status, costs, lateness, notes with markup; all in the default 7-day \
             window), written by `bench __timing-log {rows} D/task_timing.tsv`. Baseline: \
             `awk -F'\\t' '{AWK_PROGRAM}' D/task_timing.tsv` ({awk_label}; mawk too when \
             installed), per-schedule row counts and sums of duration and cost. Wall time, \
             median of {runs} alternating runs after a warm-up (the file in the page cache). \
             The report's rows and cost per schedule are checked against awk's. Two more \
             lines, in process: `report::build_file` (read and aggregate) against \
             `TimingFile::read` (the csv reader alone). Reproduce: `cargo build --release -p \
             loop-orchestrator -p bench && target/release/bench 9`."
        ),
    );
    let judged = size != Size::Smoke;
    let result = (|| -> Result<Measured, String> {
        let bin = sys::orchestrator_bin()?;
        let dir = sys::tempdir()?;
        let file = dir.path().join("task_timing.tsv");
        crate::timing_log::write(&file, rows, Utc::now(), TimeDelta::days(6), 1, false)?;
        let page = dir.path().join("page.html");
        let text = || {
            let mut c = Command::new(&bin);
            c.arg("--dir")
                .arg(dir.path())
                .arg("report")
                .stdout(Stdio::piped());
            c
        };
        let html = || {
            let mut c = text();
            c.arg("--html").arg(&page);
            c
        };
        let has_mawk = installed("mawk");
        same_counts(
            &report_counts(&bin, dir.path())?,
            &awk_counts("awk", &file)?,
        )?;
        if has_mawk {
            same_counts(
                &report_counts(&bin, dir.path())?,
                &awk_counts("mawk", &file)?,
            )?;
        }
        let (mut t, mut h, mut a, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut inp, mut tr) = (Vec::new(), Vec::new());
        let options = loop_orchestrator::report::Options {
            since: Utc::now() - TimeDelta::days(7),
            schedule: None,
            budgets: BTreeMap::new(),
        };
        for run in 0..=runs {
            let text_time = sys::time_command(&mut text())?;
            let html_time = sys::time_command(&mut html())?;
            let awk_time = sys::time_command(&mut awk("awk", &file))?;
            let mawk_time = if has_mawk {
                Some(sys::time_command(&mut awk("mawk", &file))?)
            } else {
                None
            };
            // Run 0 warms the page cache and the binaries.
            if run > 0 {
                t.push(text_time);
                h.push(html_time);
                a.push(awk_time);
                m.extend(mawk_time);
            }
        }
        // In process, after the processes, and all the reports before all the csv reads:
        // a gigabyte of `Row`s freed just before a run made that run slower.
        for run in 0..=runs {
            let start = Instant::now();
            let built = loop_orchestrator::report::build_file(&file, &options, Utc::now())
                .map_err(|e| e.to_string())?;
            if run > 0 {
                inp.push(start.elapsed());
            }
            std::hint::black_box(built);
        }
        for run in 0..=runs {
            let start = Instant::now();
            let log = loop_orchestrator::timing::TimingFile::new(&file)
                .read()
                .map_err(|e| e.to_string())?;
            if run > 0 {
                tr.push(start.elapsed());
            }
            std::hint::black_box(log);
        }
        let html_bytes = std::fs::metadata(&page)
            .map_err(|e| format!("no page written: {e}"))?
            .len();
        Ok(Measured {
            text: Samples::from_durations_ms(&t),
            html: Samples::from_durations_ms(&h),
            awk: Samples::from_durations_ms(&a),
            mawk: has_mawk.then(|| Samples::from_durations_ms(&m)),
            html_bytes,
            in_process: Samples::from_durations_ms(&inp),
            timing_read: Samples::from_durations_ms(&tr),
        })
    })();
    let case = format!("{rows} rows");
    let measured = match result {
        Ok(m) => m,
        Err(e) => {
            figure.errors.push(e);
            return figure;
        }
    };
    let verdict = |ok: bool| {
        if judged {
            Verdict::judge(ok)
        } else {
            Verdict::Info
        }
    };
    let (text, html, awk) = (
        measured.text.median(),
        measured.html.median(),
        measured.awk.median(),
    );
    let text_ratio = stats::ratio(text, awk);
    figure.lines.push(
        Line::new(
            &case,
            format!("`report` wall time, median (baseline {awk_label})"),
        )
        .ours(stats::ms(text))
        .baseline(stats::ms(awk))
        .ratio(text_ratio)
        .target(
            "≤ 1 s; ratio ≤ 3",
            verdict(text <= 1_000.0 && text_ratio.is_some_and(|r| r <= 3.0)),
        ),
    );
    if let Some(mawk) = &measured.mawk {
        figure.lines.push(
            Line::new(&case, "`report` wall time, median (baseline mawk)")
                .ours(stats::ms(text))
                .baseline(stats::ms(mawk.median()))
                .ratio(stats::ratio(text, mawk.median())),
        );
    }
    figure.lines.push(
        Line::new(
            &case,
            format!("`report --html` wall time, median (baseline {awk_label})"),
        )
        .ours(stats::ms(html))
        .baseline(stats::ms(awk))
        .ratio(stats::ratio(html, awk))
        .target("≤ 2 s", verdict(html <= 2_000.0)),
    );
    figure.lines.push(
        Line::new(&case, "page size")
            .ours(format!("{:.0} KiB", measured.html_bytes as f64 / 1024.0))
            .target("≤ 2 MB", verdict(measured.html_bytes <= 2_000_000)),
    );
    figure.lines.push(
        Line::new(
            &case,
            "in process: `report::build_file` vs `TimingFile::read`, median",
        )
        .ours(stats::ms(measured.in_process.median()))
        .baseline(stats::ms(measured.timing_read.median()))
        .ratio(stats::ratio(
            measured.in_process.median(),
            measured.timing_read.median(),
        )),
    );
    figure.notes.push(format!(
        "rows and cost per schedule: the report agrees with {awk_label}{}",
        if measured.mawk.is_some() {
            " and mawk"
        } else {
            ""
        }
    ));
    figure
}
