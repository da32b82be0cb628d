//! Command-line interface: clap definitions, and the rendering of what the commands in
//! [`crate::app`] return.
//!
//! Rule: this layer parses and renders only. Each command is one call into `app` (or
//! [`crate::service::serve`]); its result is printed here and its error goes back to `main`,
//! which prints it once and exits with [`crate::exit::Error::exit_code`]. Exit codes
//! (SPEC §7): 0 success, 1 a mode failed, 2 invalid input, 75 the schedule's cycle is already
//! running (EX_TEMPFAIL), 130 interrupted by a signal.

mod live;
mod mcp;

use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::app;
use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::render;

/// A cron supervisor for autonomous work loops.
///
/// It fires the schedules of schedules.json and runs each fire as a cycle through a pipeline
/// of modes (implementation → validation → quality → integration → planning), each a command.
/// Every step is a row in task_timing.tsv; facts go to persistent-memory.md; TODO.md is the plan.
///
/// Start with `loop-orchestrator init DIR`, then `loop-orchestrator --dir DIR run-cycle`.
#[derive(Debug, Parser)]
#[command(name = "loop-orchestrator", version, max_term_width = 100)]
pub struct Cli {
    /// The instance directory (schedules.json, modes/, TODO.md, ...).
    #[arg(
        long,
        global = true,
        env = "LOOP_ORCHESTRATOR_DIR",
        default_value = ".",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Accept schedules.json and mode files that group or others can write, or that are
    /// symlinks owned by another user (refused by default, as cron refuses such a crontab).
    #[arg(long, global = true, env = "LOOP_ORCHESTRATOR_ALLOW_INSECURE_CONFIG")]
    pub allow_insecure_config: bool,
    /// More log lines on stderr (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground (systemd Type=notify-reload).
    ///
    /// Fires every enabled schedule on its cron instants, reloads on edits and SIGHUP, and
    /// stops cleanly on SIGTERM/SIGINT. One service per directory.
    ///
    /// Example: loop-orchestrator serve --metrics 127.0.0.1:9464
    Serve(ServeArgs),
    /// Run one cycle now and wait for it.
    ///
    /// Without --schedule, every enabled schedule runs, one after the other, in file order.
    /// Exit: 0 all ok, 1 a mode failed, 2 invalid input, 75 the schedule's cycle is already
    /// running.
    ///
    /// Example: loop-orchestrator run-cycle --schedule main-loop
    RunCycle(RunCycleArgs),
    /// Check schedules.json, modes/, TODO.md and the memory file; list every problem.
    ///
    /// Exit 0 when all is well, 2 otherwise. Runs exactly the checks `serve` runs at load.
    Validate,
    /// Schedules, next fires, last results, failure streaks, TODO progress, memory use.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Ask the cluster's database instead: its nodes (heartbeat, running cycles,
        /// version, schedules hash) and per schedule the node of its last cycle.
        #[arg(long)]
        cluster: bool,
    },
    /// Upcoming fire instants, local and UTC.
    ///
    /// Example: loop-orchestrator next main-loop --count 5
    Next {
        /// A schedule id (default: every schedule).
        id: Option<String>,
        /// How many instants per schedule.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// Runs, failures, durations, lateness and cost per schedule and mode, from task_timing.tsv.
    ///
    /// Example: loop-orchestrator report --since 36h --html report.html
    Report(ReportArgs),
    /// Lift the escalation of a schedule so it fires again.
    Resume {
        /// The schedule id.
        id: String,
    },
    /// The items of TODO.md, numbered for `run-cycle --todo N`.
    Todo {
        /// Print `HANDOFF: next: ...` naming the first open item (for a planning mode).
        #[arg(long)]
        handoff: bool,
    },
    /// Show, add to, or prune persistent-memory.md.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// Import Roo Code modes (.roomodes, JSON or YAML) as modes/<slug>.md, or list the modes.
    #[command(subcommand)]
    Modes(ModesCommand),
    /// Write a working instance (schedules.json, modes/, TODO.md, memory, timing file).
    ///
    /// Existing files are kept. Example: loop-orchestrator init ~/my-repo
    Init {
        /// Where (default: --dir).
        target: Option<PathBuf>,
    },
    /// Serve the Model Context Protocol on stdio (or Streamable HTTP with --http ADDR).
    Mcp(mcp::McpArgs),
    /// Print a shell completion script.
    ///
    /// Example: loop-orchestrator completions bash > ~/.local/share/bash-completion/completions/loop-orchestrator
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write the pages of every command to a directory.
    ///
    /// Example: loop-orchestrator man --out-dir ~/.local/share/man/man1
    Man {
        /// Write loop-orchestrator.1 and a page per command (loop-orchestrator-serve.1, ...)
        /// here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics, health at /healthz and /readyz, and
    /// a read-only page at / (wins over "metrics" in schedules.json).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Allow a metrics address other hosts can reach (nothing there is authenticated; put
    /// it behind a firewall or a proxy).
    #[arg(long)]
    pub metrics_allow_remote: bool,
}

#[derive(Debug, Args)]
pub struct RunCycleArgs {
    /// Run only this schedule.
    #[arg(long, value_name = "ID")]
    pub schedule: Option<String>,
    /// Run TODO.md item N (see `todo`) through the schedule's modes, as priority `todo`,
    /// capped at 3600 s; while a service runs, it stops 2 s before the next schedule fire.
    /// Uses --schedule, or the first enabled schedule.
    #[arg(long, value_name = "N")]
    pub todo: Option<usize>,
    /// Show what would run (commands, prompt delivery, limits); run and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even when a schedule is paused by a rate limit or has spent its budget for the
    /// day (otherwise it gets a `skipped` row and exit 75).
    #[arg(long)]
    pub ignore_limits: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModesCommand {
    /// Write modes/<slug>.md for each mode of a .roomodes file; existing files are kept
    /// unless --force. Exit 2 when a file was kept or the input has a problem.
    ///
    /// Example: loop-orchestrator modes import .roomodes --agent codex
    Import {
        /// The .roomodes file (its .roo/rules-<slug>/ folders are read too).
        file: PathBuf,
        /// The agent preset the modes run: claude, codex, gemini or aider.
        #[arg(long, default_value = "claude")]
        agent: String,
        /// Replace existing mode files.
        #[arg(long)]
        force: bool,
    },
    /// Each mode, the agent or command it runs, and the schedules that use it.
    List,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Rows that started since then: a duration back from now (7d, 36h, 90m), a date
    /// (2026-11-20, midnight UTC) or an RFC 3339 time (2026-11-20T08:00:00Z).
    #[arg(long, value_name = "DUR|DATE", default_value = "7d", value_parser = parse_since)]
    pub since: crate::report::Since,
    /// Only this schedule.
    #[arg(long, value_name = "ID")]
    pub schedule: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page (inline SVG and CSS).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Report on every node's rows, read from the cluster's database (`timing_rows`).
    #[arg(long)]
    pub cluster: bool,
}

fn parse_since(text: &str) -> Result<crate::report::Since, String> {
    text.parse()
        .map_err(|_| format!("expected {}", crate::report::SINCE_FORMS))
}

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Print the memory file and its size against the limit.
    Show,
    /// Add an entry to a section.
    ///
    /// Example: loop-orchestrator memory add --section Commands "cargo nextest run"
    Add {
        /// Implementation Patterns, Commands or System Updates.
        #[arg(long, default_value = "System Updates")]
        section: String,
        /// The entry's text.
        text: String,
    },
    /// Prune down to the target now, whatever the file's length, moving entries to
    /// persistent-memory.archive.md: older copies of an entry first, then the oldest,
    /// System Updates before Commands before Implementation Patterns.
    ///
    /// Example: loop-orchestrator memory prune --target-lines 120
    Prune {
        /// Lines to keep at most (default: memory.target_lines in schedules.json, 240).
        #[arg(long)]
        target_lines: Option<usize>,
    },
}

/// Runs a parsed command line; `Ok` carries the exit code of a command that ran (a failed
/// mode is a result, not an error), `Err` what `main` prints before exiting.
pub fn run(cli: Cli) -> Result<Code, Error> {
    init_logging(&cli);
    crate::config::allow_insecure_config(cli.allow_insecure_config);
    let inst = Instance::new(cli.dir.clone());
    match cli.command {
        Command::Serve(args) => crate::service::serve(
            &inst,
            &crate::service::Options {
                metrics: args.metrics,
                metrics_allow_remote: args.metrics_allow_remote,
            },
        ),
        Command::RunCycle(args) => run_cycle(&inst, args),
        Command::Validate => {
            let valid = app::validate::validate(&inst)?;
            println!(
                "ok: {} schedule(s), {} mode(s)",
                valid.schedules, valid.modes
            );
            Ok(Code::OK)
        }
        Command::Status {
            json,
            cluster: true,
        } => {
            let report = app::status::cluster(&inst)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(Error::failed)?
                );
            } else {
                print!("{}", render::cluster_status(&report));
            }
            Ok(Code::OK)
        }
        Command::Status { json, .. } => {
            let now = Utc::now();
            let report = app::status::status(&inst, now);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(Error::failed)?
                );
            } else {
                print!("{}", render::status(&report, now));
            }
            Ok(Code::OK)
        }
        Command::Next { id, count } => {
            let fires = app::next::next(&inst, id.as_deref(), count, Utc::now())?;
            print!("{}", render::next(&fires));
            Ok(Code::OK)
        }
        Command::Report(args) => report(&inst, args),
        Command::Resume { id } => {
            let resumed = app::resume::resume(&inst, &id)?;
            if let Some(warning) = &resumed.warning {
                eprintln!("warning: {warning}");
            }
            println!("{}", render::resumed(&resumed));
            Ok(Code::OK)
        }
        Command::Todo { handoff } => {
            let todo = app::todo::todo(&inst)?;
            print!("{}", render::todo(&todo));
            if handoff {
                println!("{}", app::todo::handoff_line(&todo));
            }
            Ok(Code::OK)
        }
        Command::Memory(command) => memory(&inst, command),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let name = command.get_name().to_string();
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, name, &mut script);
            if shell == clap_complete::Shell::Bash {
                script = bash_hyphen_fix(&script);
            }
            print_bytes(&script, "completions")
        }
        Command::Man { out_dir: None } => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .map_err(|err| Error::Failed(format!("man: {err}")))?;
            print_bytes(&page, "man")
        }
        Command::Man { out_dir: Some(dir) } => {
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(|err| Error::Failed(format!("man: {}: {err}", dir.display())))?;
            println!("wrote the man pages to {}", dir.display());
            Ok(Code::OK)
        }
        Command::Modes(ModesCommand::List) => {
            print!("{}", render::modes(&app::modes::list(&inst)?));
            Ok(Code::OK)
        }
        Command::Modes(ModesCommand::Import { file, agent, force }) => {
            let report = app::modes::import(&inst, &file, &agent, force)?;
            for path in &report.written {
                println!("wrote {path}");
            }
            for path in &report.skipped {
                println!("kept {path} (it exists; --force replaces it)");
            }
            Ok(if report.skipped.is_empty() {
                Code::OK
            } else {
                Code::INVALID
            })
        }
        Command::Mcp(args) => mcp::run(&inst, args),
        Command::Init { target } => {
            let target = target.unwrap_or(cli.dir);
            let done = app::init::init(&target)?;
            for path in &done.written {
                println!("wrote {}", path.display());
            }
            for path in &done.kept {
                println!("kept  {} (exists)", path.display());
            }
            println!(
                "next: loop-orchestrator --dir {} run-cycle",
                target.display()
            );
            Ok(Code::OK)
        }
    }
}

/// clap_complete's bash script spells the state of a subcommand two ways when the binary's
/// name has a hyphen (`loop__orchestrator__subcmd__memory` where it is set,
/// `loop__subcmd__orchestrator__subcmd__memory` where it is matched), so nothing after the
/// first word completes (clap-rs/clap#6421, open in clap_complete 4.6.12). The matched
/// spelling is rewritten to the set one; once clap_complete agrees with itself this changes
/// nothing. tests/completions.rs completes a second-level word through bash.
fn bash_hyphen_fix(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("loop__subcmd__orchestrator", "loop__orchestrator")
        .into_bytes()
}

/// Writes generated text to stdout; a reader that stopped early (`| head`) is no error.
fn print_bytes(bytes: &[u8], what: &str) -> Result<Code, Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(Code::OK),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(Code::OK),
        Err(err) => Err(Error::Failed(format!("{what}: cannot write: {err}"))),
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.verbose, matches!(cli.command, Command::Serve(_))) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr a file on a full disk) is lost, never
        // fatal: tracing-subscriber would report it with `eprintln!`, which panics then.
        .log_internal_errors(false)
        .with_target(false);
    // Under systemd the journal adds its own timestamps and has no colours.
    let under_systemd =
        std::env::var_os("JOURNAL_STREAM").is_some() || std::env::var_os("INVOCATION_ID").is_some();
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain if under_systemd => builder.without_time().with_ansi(false).try_init(),
        LogFormat::Plain => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// A runtime on the calling thread alone (`run-cycle`, and the service's scheduling loop).
pub fn single_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn run_cycle(inst: &Instance, args: RunCycleArgs) -> Result<Code, Error> {
    let request = app::run_cycle::Request {
        schedule: args.schedule,
        todo: args.todo,
        ignore_limits: args.ignore_limits,
    };
    if args.dry_run {
        print!("{}", render::plans(&app::run_cycle::plan(inst, &request)?));
        return Ok(Code::OK);
    }
    // One thread: a run-cycle runs one mode at a time, and worker threads would only add
    // their start-up and a cross-thread wake-up per step (figure 5 in BENCHMARKS.md).
    let rt = single_thread_runtime()
        .map_err(|err| Error::Failed(format!("run-cycle: cannot start the runtime: {err}")))?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        spawn_signal_cancel(cancel.clone());
        let outcome = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let mut live = live::Live::default();
            app::run_cycle::run(inst, &request, cancel, |event| live.event(event)).await?
        } else {
            app::run_cycle::run(inst, &request, cancel, render::progress).await?
        };
        Ok(outcome.exit_code())
    })
}

/// Cancels `cancel` on SIGINT or SIGTERM, so running modes end as `interrupted` with their
/// rows written.
fn spawn_signal_cancel(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("signal received: stopping the running mode");
        cancel.cancel();
    });
}

fn report(inst: &Instance, args: ReportArgs) -> Result<Code, Error> {
    use std::io::Write as _;
    let request = app::report::Request {
        since: args.since,
        schedule: args.schedule,
    };
    let report = if args.cluster {
        app::report::cluster_report(inst, &request, Utc::now())?
    } else {
        app::report::report(inst, &request, Utc::now())?
    };
    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
    } else {
        stdout.write_all(crate::report::text::render(&report).as_bytes())
    };
    match printed {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(Error::Failed(format!("cannot write the report: {err}")));
        }
        _ => {}
    }
    if let Some(file) = &args.html {
        let size = app::report::write_page(file, &report)?;
        eprintln!("wrote {} ({} KiB)", file.display(), size.div_ceil(1024));
    }
    Ok(Code::OK)
}

fn memory(inst: &Instance, command: MemoryCommand) -> Result<Code, Error> {
    match command {
        MemoryCommand::Show => {
            let shown = app::memory::show(inst)?;
            print!("{}", shown.text);
            eprintln!("{}", render::memory_use(&shown));
        }
        MemoryCommand::Add { section, text } => {
            app::memory::add(inst, app::memory::section(&section)?, &text)?;
        }
        MemoryCommand::Prune { target_lines } => {
            let report = app::memory::prune(inst, target_lines)?;
            println!("{}", render::pruned(&report));
        }
    }
    Ok(Code::OK)
}
