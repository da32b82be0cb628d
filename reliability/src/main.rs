//! The reliability harnesses of loop-orchestrator (issue "Proven under faults and hostile
//! input"): `soak`, `crash` and `floods`, each against the real binary on a real directory;
//! `cluster` (issue "Beyond one machine") against three nodes on a real PostgreSQL.
//!
//! Run with `cargo run --release -p reliability -- <command>`; the `loop-orchestrator`
//! binary is taken from `$LOOP_ORCHESTRATOR_BIN` or next to this executable (build both into
//! one target dir). Each command prints a table and exits 1 on any violation, 2 on a usage or
//! setup error. `REL_KEEP=1` keeps the instance directory for a post-mortem.

mod cluster;
mod crash;
mod floods;
mod soak;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: reliability <command>
  soak [--minutes N] [--schedules N]   500 schedules under serve, edits every few seconds (default 10 min)
  crash [--rounds N]                   SIGKILL serve / run-cycle at random moments (default 500 rounds)
  floods [a|b|c|d]                     1 GiB stdout, closed stdin, 200 children, full filesystem
  cluster [--scenario faults|db|lateness|all] [--seconds N] [--schedules N] [--lease S]
                                       3 serve nodes on a PostgreSQL of its own: SIGKILL, a cut, the database stopped";

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("soak") => (|| {
            soak::run(soak::Options {
                minutes: flag(&args, "--minutes", 10.0)?,
                schedules: flag(&args, "--schedules", 500)?,
            })
        })(),
        Some("crash") => (|| {
            crash::run(crash::Options {
                rounds: flag(&args, "--rounds", 500)?,
            })
        })(),
        Some("floods") => floods::run(args.get(1).cloned()),
        Some("cluster") => (|| {
            cluster::run(cluster::Options {
                seconds: flag(&args, "--seconds", 120.0)?,
                schedules: flag(&args, "--schedules", 100)?,
                lease_s: flag(&args, "--lease", 6)?,
                scenario: args
                    .iter()
                    .position(|a| a == "--scenario")
                    .and_then(|i| args.get(i + 1))
                    .cloned()
                    .unwrap_or_else(|| "all".into()),
            })
        })(),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("reliability: {err}");
            ExitCode::from(2)
        }
    }
}
