//! Figure 8: scale. `validate` of 10,000 schedules (varied cron forms and zones) with the
//! five mode files `init` writes; the reference is the process floor, `--version` of the
//! same binary. The RSS of `serve` holding them is measured by [`crate::service`].

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::Size;
use crate::instance;
use crate::report::{Figure, Line, Verdict};
use crate::service;
use crate::stats::{self, Samples};
use crate::sys;

const CRONS: [&str; 6] = [
    "0 */10 * * * *",
    "30 2 * * *",
    "@hourly",
    "0 0 9 * * 1-5",
    "*/15 * * * *",
    "0 30 2,14 1-7 * *",
];
const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];

pub fn schedules(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({
                "id": format!("s-{i:05}"),
                "task": format!("Advance item {i} of TODO.md"),
                "cron": CRONS[i % CRONS.len()],
                "timezone": ZONES[i % ZONES.len()],
            })
        })
        .collect()
}

/// An `init`ed instance whose schedules.json holds `count` schedules.
pub fn prepare(bin: &Path, dir: &Path, count: usize) -> Result<(), String> {
    sys::time_command(
        Command::new(bin)
            .arg("init")
            .arg(dir)
            .env_remove("LOOP_ORCHESTRATOR_DIR")
            .stdout(Stdio::null()),
    )?;
    instance::write(
        dir,
        "schedules.json",
        &instance::schedules_json(schedules(count), 1),
    )
}

pub fn figure(size: Size) -> Figure {
    // A slow validate gets fewer runs, so that `all --quick` stays short.
    let (count, runs, budget_s) = match size {
        Size::Full => (10_000, 11, 60.0),
        Size::Quick => (10_000, 3, 6.0),
        Size::Smoke => (1_000, 1, 2.0),
    };
    let mut figure = Figure::new(
        8,
        "Scale",
        format!(
            "`loop-orchestrator --dir D validate` with {count} schedules (6 cron forms, 3 zones) \
             and the five mode files of `init`; median of up to {runs} runs after a warm-up \
             (fewer when they would exceed {budget_s} s). Baseline: the process \
             floor, `loop-orchestrator --version`. RSS of `serve` holding the same schedules, \
             after it reports ready."
        ),
    );
    let judged = size != Size::Smoke;
    let result = (|| -> Result<(Samples, Samples, tempfile::TempDir), String> {
        let bin = sys::orchestrator_bin()?;
        let dir = sys::tempdir()?;
        prepare(&bin, dir.path(), count)?;
        let validate = || {
            let mut c = Command::new(&bin);
            c.arg("--dir")
                .arg(dir.path())
                .arg("validate")
                .env_remove("RUST_LOG")
                .stdout(Stdio::null());
            c
        };
        let floor = || {
            let mut c = Command::new(&bin);
            c.arg("--version").stdout(Stdio::null());
            c
        };
        let warm = sys::time_command(&mut validate())?;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        // A run longer than the whole budget is its own sample: warming up is moot then.
        let runs = if warm.as_secs_f64() > budget_s {
            ours.push(warm);
            base.push(sys::time_command(&mut floor())?);
            0
        } else {
            ((budget_s / warm.as_secs_f64()) as usize).clamp(1, runs)
        };
        for _ in 0..runs {
            ours.push(sys::time_command(&mut validate())?);
            base.push(sys::time_command(&mut floor())?);
        }
        Ok((
            Samples::from_durations_ms(&ours),
            Samples::from_durations_ms(&base),
            dir,
        ))
    })();
    let case = format!("{count} schedules");
    match result {
        Ok((ours, base, dir)) => {
            let verdict = if judged {
                Verdict::judge(ours.median() <= 100.0)
            } else {
                Verdict::Info
            };
            figure.lines.push(
                Line::new(&case, "`validate` wall time, median")
                    .ours(stats::ms(ours.median()))
                    .baseline(stats::ms(base.median()))
                    .ratio(stats::ratio(ours.median(), base.median()))
                    .target("≤ 100 ms", verdict),
            );
            figure
                .lines
                .push(service::serve_rss(dir.path(), &case, judged));
        }
        Err(e) => figure.errors.push(e),
    }
    figure
}
