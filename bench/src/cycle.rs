//! Figure 5: run-cycle overhead. Wall time of `loop-orchestrator --dir D run-cycle` with
//! one schedule of five modes that each run `true` (prompt none), against a bash script
//! that runs the same `true` program five times and appends six rows with printf. Runs
//! alternate between the two so a change in machine load hits both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::Size;
use crate::instance;
use crate::report::{Figure, Line, Verdict};
use crate::stats::{self, Samples};
use crate::sys;

const MODES: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

/// The `true` program on PATH (not bash's builtin: the baseline must start a process
/// per mode as we do).
fn true_program() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("true"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no `true` program on PATH".into())
}

fn baseline_script(true_bin: &Path) -> String {
    let modes = MODES.join(" ");
    format!(
        r#"#!/bin/bash
# Five modes that run `true`, one row each, then the cycle row: printf to a TSV.
set -e
tsv="$1"
printf -v cycle '%(%Y%m%dT%H%M%SZ)T-bench' -1
printf -v cstart '%(%Y-%m-%dT%H:%M:%S)T.000Z' -1
for m in {modes}; do
  printf -v s '%(%Y-%m-%dT%H:%M:%S)T.000Z' -1
  {true_bin} 
  code=$?
  printf -v e '%(%Y-%m-%dT%H:%M:%S)T.000Z' -1
  printf '\t%s\t%s\t%d\tschedule\tbench\t%s\t%s\t1\tok\t%d\t\t%s\n' \
    "$s" "$e" 0 "$cycle" "$m" "$code" "$m ok" >> "$tsv"
done
printf -v e '%(%Y-%m-%dT%H:%M:%S)T.000Z' -1
printf '\t%s\t%s\t%d\tschedule\tbench\t%s\tcycle\t1\tok\t0\t\t%s\n' \
  "$cstart" "$e" 0 "$cycle" "5 modes ok" >> "$tsv"
"#,
        true_bin = true_bin.display()
    )
}

fn prepare(dir: &Path) -> Result<(), String> {
    let schedule = json!({ "id": "bench", "task": "Run five trivial modes", "modes": MODES });
    instance::write(
        dir,
        "schedules.json",
        &instance::schedules_json(vec![schedule], 1),
    )?;
    for slug in MODES {
        instance::true_mode(dir, slug)?;
    }
    instance::write(dir, "TODO.md", "# TODO\n\n- [ ] Measure run-cycle\n")?;
    instance::fresh_memory(dir)
}

pub fn figure(size: Size) -> Figure {
    let runs = match size {
        Size::Full => 31,
        Size::Quick => 5,
        Size::Smoke => 2,
    };
    let mut figure = Figure::new(
        5,
        "Run-cycle overhead",
        format!(
            "Wall time of `loop-orchestrator --dir D run-cycle` (process start to exit) with one \
             schedule of 5 modes, each `command = [\"true\"]`, `prompt = \"none\"`; baseline: \
             `bash script.sh` running the same `true` program 5 times and appending 6 rows with \
             printf (no fsync). {runs} runs each after one warm-up, alternating; median. The \
             tmpfs line runs both again in /dev/shm, where fdatasync and inode allocation \
             cost almost nothing: the difference between the two lines is what the disk \
             charges for the durability SPEC §4 and §5 require."
        ),
    );
    let result = measure(sys::tempdir(), runs);
    // The same on tmpfs, where fdatasync costs nothing and inodes are cheap: what the
    // durability SPEC §4 and §5 ask for (a flush per row and per memory write, which the
    // baseline script does not do) costs on the disk.
    let on_tmpfs = Path::new("/dev/shm").is_dir().then(|| {
        measure(
            tempfile::Builder::new()
                .prefix("lo-bench-")
                .tempdir_in("/dev/shm")
                .map_err(|e| format!("cannot create a temp dir in /dev/shm: {e}")),
            runs,
        )
    });
    match result {
        Ok((ours, base)) => {
            let judged = size != Size::Smoke;
            let ratio = stats::ratio(ours.median(), base.median());
            let verdict = |ok: bool| {
                if judged {
                    Verdict::judge(ok)
                } else {
                    Verdict::Info
                }
            };
            figure.lines.push(
                Line::new("5 modes `true`", "wall time, median")
                    .ours(stats::ms(ours.median()))
                    .baseline(stats::ms(base.median()))
                    .ratio(ratio)
                    .target("≤ 15 ms", verdict(ours.median() <= 15.0)),
            );
            figure.lines.push(
                Line::new("5 modes `true`", "ratio of medians")
                    .ours(format!("{:.2}", ratio.unwrap_or(f64::NAN)))
                    .target("≤ 1.5", verdict(ratio.is_some_and(|r| r <= 1.5))),
            );
            figure.lines.push(
                Line::new("5 modes `true`", "wall time, max")
                    .ours(stats::ms(ours.max()))
                    .baseline(stats::ms(base.max()))
                    .ratio(stats::ratio(ours.max(), base.max())),
            );
        }
        Err(e) => figure.errors.push(e),
    }
    match on_tmpfs {
        Some(Ok((ours, base))) => figure.lines.push(
            Line::new("5 modes `true`, on tmpfs", "wall time, median")
                .ours(stats::ms(ours.median()))
                .baseline(stats::ms(base.median()))
                .ratio(stats::ratio(ours.median(), base.median())),
        ),
        Some(Err(e)) => figure.errors.push(format!("on tmpfs: {e}")),
        None => {}
    }
    figure
}

/// `runs` alternating runs of ours and the baseline in a fresh instance under `dir`.
fn measure(
    dir: Result<tempfile::TempDir, String>,
    runs: usize,
) -> Result<(Samples, Samples), String> {
    let bin = sys::orchestrator_bin()?;
    let dir = dir?;
    let instance = dir.path().join("instance");
    prepare(&instance)?;
    let script = dir.path().join("baseline.sh");
    instance::write(
        dir.path(),
        "baseline.sh",
        &baseline_script(&true_program()?),
    )?;
    let tsv = dir.path().join("baseline.tsv");
    let ours_cmd = || {
        let mut c = Command::new(&bin);
        c.arg("--dir")
            .arg(&instance)
            .arg("run-cycle")
            .env_remove("RUST_LOG")
            .env_remove("LOOP_ORCHESTRATOR_DIR")
            .stdout(Stdio::null());
        c
    };
    let base_cmd = || {
        let mut c = Command::new("bash");
        c.arg(&script).arg(&tsv).stdout(Stdio::null());
        c
    };
    sys::time_command(&mut ours_cmd())?;
    sys::time_command(&mut base_cmd())?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for round in 0..runs {
        if round % 2 == 0 {
            ours.push(sys::time_command(&mut ours_cmd())?);
            base.push(sys::time_command(&mut base_cmd())?);
        } else {
            base.push(sys::time_command(&mut base_cmd())?);
            ours.push(sys::time_command(&mut ours_cmd())?);
        }
    }
    // Every cycle must have left its six rows, like the script.
    let timing = loop_orchestrator::timing::TimingFile::new(instance.join("task_timing.tsv"))
        .read()
        .map_err(|e| e.to_string())?;
    let expected = (runs + 1) * (MODES.len() + 1);
    if timing.rows.len() != expected || !timing.bad_lines.is_empty() {
        return Err(format!(
            "task_timing.tsv has {} rows and {} bad lines after {} cycles (expected {expected} rows)",
            timing.rows.len(),
            timing.bad_lines.len(),
            runs + 1
        ));
    }
    let base_rows = std::fs::read_to_string(&tsv)
        .map_err(|e| e.to_string())?
        .lines()
        .count();
    if base_rows != expected {
        return Err(format!(
            "the baseline TSV has {base_rows} rows, expected {expected}"
        ));
    }
    Ok((
        Samples::from_durations_ms(&ours),
        Samples::from_durations_ms(&base),
    ))
}
