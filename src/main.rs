//! The `loop-orchestrator` binary: parse arguments, run, print the error once, exit with its
//! code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match loop_orchestrator::cli::run(loop_orchestrator::cli::Cli::parse()) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("{err}");
            err.exit_code().into()
        }
    }
}
