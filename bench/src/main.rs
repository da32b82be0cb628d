//! The benchmark harness: `cargo run --release -p bench -- <figure>...|all [--quick]
//! [--smoke] [--write] [--out FILE]`.
//!
//! Each figure measures our code and its baseline in the same invocation and prints
//! markdown table rows (ours, baseline, ratio = ours / baseline, target, result). With
//! `--write` the figures' blocks in the benchmarks file are rewritten (see
//! [`report`]). A missed target is reported, not an error; the exit status is 1 only
//! when the harness failed or a figure found a correctness failure (torn or lost rows,
//! a command that failed).
//!
//! Sizes: full (the sizes), `--quick` (seconds instead of minutes, `all` well
//! under a minute), `--smoke` (the smallest run that exercises every code path, for CI;
//! targets are not judged).
//!
//! Whole-process figures run the `loop-orchestrator` binary found next to this one (build
//! both into the same target dir) or named by `LOOP_ORCHESTRATOR_BIN`. Temp files go to
//! `BENCH_DIR` or the system temp dir.

mod append;
mod claims;
mod cycle;
mod fire;
mod instance;
mod lateness;
mod mcp;
mod metrics;
mod prune;
mod report;
mod scale;
mod service;
mod stats;
mod sys;
mod timing_log;
mod tsv_report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use report::Figure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Quick,
    Smoke,
}

impl Size {
    fn as_str(self) -> &'static str {
        match self {
            Size::Full => "full",
            Size::Quick => "quick (--quick)",
            Size::Smoke => "smoke (--smoke, targets not judged)",
        }
    }
}

/// Measures one figure at a size.
type Measure = fn(Size) -> Figure;

/// The figures, in file order: number, name, and how to measure it.
const FIGURES: [(u8, &str, Measure); 9] = [
    (1, "fire", fire::fire_figure),
    (2, "idle", fire::idle_figure),
    (3, "append", append::figure),
    (4, "prune", prune::figure),
    (5, "cycle", cycle::figure),
    (6, "shutdown", service::shutdown_figure),
    (7, "reload", service::reload_figure),
    (8, "scale", scale::figure),
    (9, "report", tsv_report::figure),
];

const DEFAULT_OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md");

const USAGE: &str = "usage: bench <figure>...|all [--quick] [--smoke] [--write] [--out FILE]
figures: 1 fire, 2 idle, 3 append, 4 prune, 5 cycle, 6 shutdown, 7 reload, 8 scale,
9 report
       bench claims [--seconds N] [--url URL]   (cluster claims against a real PostgreSQL)
       bench mcp [--calls N]                    (MCP tools/call round trips, stdio and HTTP)
       bench metrics [--quick] [--smoke] [--write]   (serve --metrics: scrapes, and figure 1 beside it)";

struct Args {
    figures: Vec<u8>,
    size: Size,
    write: bool,
    out: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut figures = Vec::new();
    let (mut quick, mut smoke, mut write) = (false, false, false);
    let mut out = PathBuf::from(DEFAULT_OUT);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--smoke" => smoke = true,
            "--write" => write = true,
            "--out" => out = iter.next().ok_or("--out needs a file")?.into(),
            "-h" | "--help" => return Err(USAGE.into()),
            "all" => figures.extend(FIGURES.iter().map(|f| f.0)),
            name => {
                let found = FIGURES
                    .iter()
                    .find(|(n, short, _)| n.to_string() == name || *short == name)
                    .ok_or_else(|| format!("unknown figure {name:?}\n{USAGE}"))?;
                figures.push(found.0);
            }
        }
    }
    if figures.is_empty() {
        return Err(USAGE.into());
    }
    figures.sort_unstable();
    figures.dedup();
    let size = if smoke {
        Size::Smoke
    } else if quick {
        Size::Quick
    } else {
        Size::Full
    };
    Ok(Args {
        figures,
        size,
        write,
        out,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Hidden subcommands: this binary is also the worker process of some figures.
    let worker = match args.first().map(String::as_str) {
        Some("__append-worker") => Some(append::worker(&args[1..])),
        Some("__tcs-idle") => Some(fire::idle_worker(&args[1..])),
        Some("claims") => Some(claims::main(&args[1..])),
        Some("metrics") => Some(metrics::main(&args[1..])),
        Some("__timing-log") => Some(timing_log::command(&args[1..])),
        Some("mcp") => Some(mcp::main(&args[1..])),
        _ => None,
    };
    if let Some(result) = worker {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: {e}", args[0]);
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };

    let bin = sys::orchestrator_bin();
    if let Err(e) = &bin {
        eprintln!("warning: {e}");
    }
    let machine = sys::machine_description(bin.as_ref().ok().map(PathBuf::as_path));
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    eprint!("{machine}");
    println!("{}", report::TABLE_HEAD);
    let started = Instant::now();
    let mut figures = Vec::new();
    for number in &args.figures {
        let (_, name, measure) = FIGURES[usize::from(*number) - 1];
        eprintln!("figure {number} ({name}), {}", args.size.as_str());
        let t = Instant::now();
        let figure = measure(args.size);
        eprintln!("figure {number} took {:.1} s", t.elapsed().as_secs_f64());
        print!("{}", report::rows(&figure));
        figures.push(figure);
    }
    println!();
    let mut failed = false;
    for figure in &figures {
        for note in &figure.notes {
            println!("- {}: {note}", figure.number);
        }
        for error in &figure.errors {
            println!("- {}: **error:** {error}", figure.number);
            failed = true;
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    if args.write {
        match report::write_file(
            &args.out,
            Some(&machine),
            &figures,
            args.size.as_str(),
            &date,
        ) {
            Ok(()) => eprintln!("wrote {}", args.out.display()),
            Err(e) => {
                eprintln!("cannot write {}: {e}", args.out.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn figures_are_named_by_number_or_name() {
        let args = parse_args(&strings(&["prune", "3", "--quick"])).unwrap();
        assert_eq!(args.figures, vec![3, 4]);
        assert_eq!(args.size, Size::Quick);
        let all = parse_args(&strings(&["all", "--quick", "--smoke"])).unwrap();
        assert_eq!(all.figures.len(), 9);
        assert_eq!(all.size, Size::Smoke);
        assert!(parse_args(&strings(&["nine"])).is_err());
        assert!(parse_args(&[]).is_err());
    }
}
