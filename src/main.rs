//! The `loop-orchestrator` binary: parse arguments, run, exit with the command's code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    loop_orchestrator::cli::run(loop_orchestrator::cli::Cli::parse())
}
