//! Figure 3: row append. `TimingFile::append` of a realistic row against a raw loop of
//! `flock(LOCK_EX)` + one `write` of the same bytes on an `O_APPEND` descriptor
//! (+ `fdatasync`) + unlock, each on its own file, in 1 and 8 processes, with and
//! without the sync. After every run the file is read back with `TimingFile::read`:
//! no bad line, and exactly the rows written.
//!
//! Worker processes are this binary (`__append-worker`); they start, say `ready`, and
//! wait for a line on stdin so that all of them start together and process start-up is
//! not timed. Throughput is rows over the span from the first start to the last end
//! (CLOCK_MONOTONIC, shared by all processes).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chrono::{TimeZone, Utc};
use loop_orchestrator::timing::{Priority, Row, Status, TimingFile};
use nix::fcntl::{Flock, FlockArg};

use crate::Size;
use crate::report::{Figure, Line, Verdict};
use crate::stats::{self, Samples};
use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Raw,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Raw => "raw",
        }
    }
}

/// A mode row as a cycle writes it, with a note of typical length.
pub fn sample_row() -> Row {
    let at = |ms: i64| Utc.timestamp_millis_opt(1_795_255_200_000 + ms).unwrap();
    Row {
        scheduled_at: Some(at(0)),
        started_at: at(3),
        finished_at: at(12_345),
        duration_ms: 12_342,
        priority: Priority::Schedule,
        schedule: "main-loop".into(),
        cycle: "20261121T100000Z-main-loop".into(),
        mode: "validation".into(),
        attempt: 1,
        status: Status::Ok,
        exit_code: Some(0),
        cost_usd: Some(0.0213),
        note: "cargo test: 42 passed; 0 failed; 1 ignored; finished in 12.3s \
               (handoff: quality should check the new timing module)"
            .into(),
    }
}

/// The exact bytes `TimingFile` writes for [`sample_row`], and the header line.
fn encoded(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let path = dir.join("encode.tsv");
    let file = TimingFile::new(&path).without_sync();
    file.append(&sample_row()).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("the timing file has no header line")?
        + 1;
    Ok((bytes[split..].to_vec(), bytes[..split].to_vec()))
}

/// One process's run: when it started and ended, and each append's latency.
struct Run {
    start_ns: u64,
    end_ns: u64,
    latencies_ns: Vec<u64>,
}

fn run_ours(path: &Path, sync: bool, count: usize) -> Result<Run, String> {
    let file = if sync {
        TimingFile::new(path)
    } else {
        TimingFile::new(path).without_sync()
    };
    let row = sample_row();
    let mut latencies_ns = Vec::with_capacity(count);
    let start_ns = sys::monotonic_ns();
    for _ in 0..count {
        let t = sys::monotonic_ns();
        file.append(&row).map_err(|e| e.to_string())?;
        latencies_ns.push(sys::monotonic_ns() - t);
    }
    Ok(Run {
        start_ns,
        end_ns: sys::monotonic_ns(),
        latencies_ns,
    })
}

fn run_raw(path: &Path, bytes: &[u8], sync: bool, count: usize) -> Result<Run, String> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut latencies_ns = Vec::with_capacity(count);
    let start_ns = sys::monotonic_ns();
    for _ in 0..count {
        let t = sys::monotonic_ns();
        let locked =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| format!("flock: {e}"))?;
        let written = (&*locked).write(bytes).map_err(|e| format!("write: {e}"))?;
        if written != bytes.len() {
            return Err(format!("short write: {written} of {} bytes", bytes.len()));
        }
        if sync {
            nix::unistd::fdatasync(&*locked).map_err(|e| format!("fdatasync: {e}"))?;
        }
        file = locked
            .unlock()
            .map_err(|(_, e)| format!("flock(LOCK_UN): {e}"))?;
        latencies_ns.push(sys::monotonic_ns() - t);
    }
    Ok(Run {
        start_ns,
        end_ns: sys::monotonic_ns(),
        latencies_ns,
    })
}

/// `__append-worker KIND sync|nosync FILE COUNT BYTES_FILE`: one worker process.
pub fn worker(args: &[String]) -> Result<(), String> {
    let [kind, sync, file, count, bytes_file] = args else {
        return Err("usage: __append-worker ours|raw sync|nosync FILE COUNT BYTES_FILE".into());
    };
    let sync = sync == "sync";
    let count: usize = count.parse().map_err(|e| format!("count: {e}"))?;
    let bytes = std::fs::read(bytes_file).map_err(|e| format!("{bytes_file}: {e}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .map_err(|e| e.to_string())?;
    let run = match kind.as_str() {
        "ours" => run_ours(Path::new(file), sync, count)?,
        "raw" => run_raw(Path::new(file), &bytes, sync, count)?,
        other => return Err(format!("unknown kind {other:?}")),
    };
    let latencies: Vec<String> = run.latencies_ns.iter().map(u64::to_string).collect();
    writeln!(
        out,
        "{} {}\n{}",
        run.start_ns,
        run.end_ns,
        latencies.join(" ")
    )
    .map_err(|e| e.to_string())
}

fn run_workers(
    kind: Kind,
    path: &Path,
    bytes_file: &Path,
    sync: bool,
    procs: usize,
    count: usize,
) -> Result<Vec<Run>, String> {
    let exe = sys::self_exe()?;
    let mut children: Vec<(Child, BufReader<std::process::ChildStdout>)> = Vec::new();
    for _ in 0..procs {
        let mut child = Command::new(&exe)
            .arg("__append-worker")
            .arg(kind.as_str())
            .arg(if sync { "sync" } else { "nosync" })
            .arg(path)
            .arg(count.to_string())
            .arg(bytes_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        children.push((child, BufReader::new(stdout)));
    }
    for (_, out) in &mut children {
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("worker said {line:?} instead of ready"));
        }
    }
    for (child, _) in &mut children {
        if let Some(stdin) = child.stdin.as_mut() {
            stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
        }
    }
    let mut runs = Vec::new();
    for (mut child, mut out) in children {
        let mut span = String::new();
        let mut latencies = String::new();
        out.read_line(&mut span).map_err(|e| e.to_string())?;
        out.read_line(&mut latencies).map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("a {} worker exited with {status}", kind.as_str()));
        }
        let mut span = span.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(start_ns)), Some(Ok(end_ns))) = (span.next(), span.next()) else {
            return Err("a worker reported no time span".into());
        };
        let latencies_ns = latencies
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("worker latencies: {e}"))?;
        runs.push(Run {
            start_ns,
            end_ns,
            latencies_ns,
        });
    }
    Ok(runs)
}

/// Reads the file back: every line a row, exactly `expected` of them, all equal to the
/// row written.
fn verify(path: &Path, expected: usize) -> Result<(), String> {
    let log = TimingFile::new(path).read().map_err(|e| e.to_string())?;
    if let Some(bad) = log.bad_lines.first() {
        return Err(format!(
            "{}: {} bad line(s), first {bad}",
            path.display(),
            log.bad_lines.len()
        ));
    }
    if log.rows.len() != expected {
        return Err(format!(
            "{}: {} rows read back, {expected} written",
            path.display(),
            log.rows.len()
        ));
    }
    let sample = sample_row();
    if let Some(i) = log.rows.iter().position(|r| *r != sample) {
        return Err(format!(
            "{}: row {} differs from the row written",
            path.display(),
            i + 1
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Side {
    throughputs: Vec<f64>,
    latencies_ms: Vec<f64>,
    rows_verified: usize,
}

struct Cell {
    procs: usize,
    sync: bool,
    count: usize,
}

fn measure_cell(
    dir: &Path,
    bytes: &[u8],
    header: &[u8],
    cell: &Cell,
    rounds: usize,
) -> Result<(Side, Side), String> {
    let bytes_file = dir.join("row.bytes");
    std::fs::write(&bytes_file, bytes).map_err(|e| e.to_string())?;
    let (mut ours, mut raw) = (Side::default(), Side::default());
    for round in 0..rounds {
        // Alternate who goes first so a drift in machine load hits both sides.
        let order = if round % 2 == 0 {
            [Kind::Ours, Kind::Raw]
        } else {
            [Kind::Raw, Kind::Ours]
        };
        for kind in order {
            let path = dir.join(format!(
                "{}-{}p-{}-{round}.tsv",
                kind.as_str(),
                cell.procs,
                if cell.sync { "sync" } else { "nosync" }
            ));
            // Both files start with the header, written untimed.
            std::fs::write(&path, header).map_err(|e| e.to_string())?;
            let runs = if cell.procs == 1 {
                vec![match kind {
                    Kind::Ours => run_ours(&path, cell.sync, cell.count)?,
                    Kind::Raw => run_raw(&path, bytes, cell.sync, cell.count)?,
                }]
            } else {
                run_workers(kind, &path, &bytes_file, cell.sync, cell.procs, cell.count)?
            };
            let total = cell.procs * cell.count;
            verify(&path, total)?;
            let start = runs.iter().map(|r| r.start_ns).min().unwrap_or(0);
            let end = runs.iter().map(|r| r.end_ns).max().unwrap_or(0);
            let side = match kind {
                Kind::Ours => &mut ours,
                Kind::Raw => &mut raw,
            };
            side.throughputs
                .push(total as f64 / ((end - start).max(1) as f64 / 1e9));
            side.latencies_ms.extend(
                runs.iter()
                    .flat_map(|r| r.latencies_ns.iter().map(|&ns| ns as f64 / 1e6)),
            );
            side.rows_verified += total;
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok((ours, raw))
}

pub fn figure(size: Size) -> Figure {
    // Rows per side and cell, split over rounds that alternate ours and raw: fdatasync
    // latency on a shared disk drifts by 10x within minutes, and many short alternating
    // rounds let both sides see the same drift.
    let (sync_count, nosync_count, rounds) = match size {
        Size::Full => (2400, 48_000, 8),
        Size::Quick => (400, 8_000, 4),
        Size::Smoke => (32, 320, 1),
    };
    let per_round = |total: usize, procs: usize| (total / rounds / procs).max(1);
    let cells = [
        Cell {
            procs: 1,
            sync: true,
            count: per_round(sync_count, 1),
        },
        Cell {
            procs: 8,
            sync: true,
            count: per_round(sync_count, 8),
        },
        Cell {
            procs: 1,
            sync: false,
            count: per_round(nosync_count, 1),
        },
        Cell {
            procs: 8,
            sync: false,
            count: per_round(nosync_count, 8),
        },
    ];
    let mut figure = Figure::new(
        3,
        "Row append",
        format!(
            "`TimingFile::append` of a {{len}}-byte mode row (encode the `Row`, flock, \
             lseek(SEEK_END) for the header and torn-tail rule, write, fdatasync, unlock; the \
             descriptor stays open) against a raw loop of flock(LOCK_EX) + one write of the \
             same pre-encoded bytes on an O_APPEND fd kept open (+ fdatasync) + unlock, each \
             on its own file. \
             Rows per side and cell: {sync_count} with fdatasync, {nosync_count} without, in \
             {rounds} round(s) alternating ours/raw and split over the processes; median \
             round throughput, p99 over all appends."
        ),
    );
    let dir = match sys::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            figure.errors.push(e);
            return figure;
        }
    };
    let (bytes, header) = match encoded(dir.path()) {
        Ok(encoded) => encoded,
        Err(e) => {
            figure
                .errors
                .push(format!("cannot encode the sample row: {e}"));
            return figure;
        }
    };
    figure.how = figure.how.replace("{len}", &bytes.len().to_string());
    let judged = size != Size::Smoke;
    let mut verified = 0;
    for cell in &cells {
        let case = format!(
            "{} process{}, {}",
            cell.procs,
            if cell.procs == 1 { "" } else { "es" },
            if cell.sync { "fdatasync" } else { "no sync" }
        );
        eprintln!("  figure 3: {case}");
        match measure_cell(dir.path(), &bytes, &header, cell, rounds) {
            Ok((ours, raw)) => {
                let ours_rate = Samples::new(ours.throughputs).median();
                let raw_rate = Samples::new(raw.throughputs).median();
                let ratio = stats::ratio(ours_rate, raw_rate);
                let verdict = if judged {
                    Verdict::judge(ratio.is_some_and(|r| r >= 0.9))
                } else {
                    Verdict::Info
                };
                figure.lines.push(
                    Line::new(&case, "appends/s")
                        .ours(stats::per_s(ours_rate))
                        .baseline(stats::per_s(raw_rate))
                        .ratio(ratio)
                        .target("ratio ≥ 0.9", verdict),
                );
                let ours_p99 = Samples::new(ours.latencies_ms).percentile(99.0);
                let raw_p99 = Samples::new(raw.latencies_ms).percentile(99.0);
                figure.lines.push(
                    Line::new(&case, "p99 latency")
                        .ours(stats::ms(ours_p99))
                        .baseline(stats::ms(raw_p99))
                        .ratio(stats::ratio(ours_p99, raw_p99)),
                );
                verified += ours.rows_verified + raw.rows_verified;
            }
            Err(e) => figure.errors.push(format!("{case}: {e}")),
        }
    }
    figure.notes.push(format!(
        "torn rows: every file read back with `TimingFile::read` after each run; \
         {verified} rows verified, {} bad lines or lost rows",
        if figure.errors.is_empty() {
            "no"
        } else {
            "SOME"
        }
    ));
    figure
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_and_raw_write_rows_that_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, header) = encoded(dir.path()).unwrap();
        assert!(bytes.ends_with(b"\n") && header.starts_with(b"scheduled_at\t"));
        let ours = dir.path().join("ours.tsv");
        let raw = dir.path().join("raw.tsv");
        std::fs::write(&raw, &header).unwrap();
        assert_eq!(run_ours(&ours, false, 20).unwrap().latencies_ns.len(), 20);
        run_raw(&raw, &bytes, true, 20).unwrap();
        verify(&ours, 20).unwrap();
        verify(&raw, 20).unwrap();
        assert!(verify(&raw, 21).is_err(), "a lost row is caught");
        std::fs::write(&raw, [header.as_slice(), &bytes[..10]].concat()).unwrap();
        assert!(verify(&raw, 0).is_err(), "a torn row is caught");
    }
}
