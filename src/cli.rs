//! Command-line interface: clap definitions and the commands that are not a service.
//!
//! Exit codes (SPEC §7): 0 success, 1 a mode failed, 2 invalid input, 75 the schedule's cycle
//! is already running (EX_TEMPFAIL), 130 interrupted by a signal.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Problem, Problems};
use crate::cycle::{self, CycleSpec, ModeReport, TODO_FILE};
use crate::lock::{LockError, LockFile};
use crate::memory::{MemoryDoc, MemoryLimits, Section};
use crate::schedule::Overlap;
use crate::timing::{Priority, Status};
use crate::todo::Todo;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_BUSY: u8 = 75;
pub const EXIT_INTERRUPTED: u8 = 130;

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
    Serve,
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

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(&cli);
    crate::config::allow_insecure_config(cli.allow_insecure_config);
    let dir = cli.dir.clone();
    let code = match cli.command {
        Command::Serve => crate::supervisor::serve(&dir),
        Command::RunCycle(args) => run_cycle(&dir, args),
        Command::Validate => validate(&dir),
        Command::Status { json } => status(&dir, json),
        Command::Next { id, count } => next(&dir, id.as_deref(), count),
        Command::Resume { id } => crate::supervisor::resume(&dir, &id),
        Command::Todo { handoff } => todo(&dir, handoff),
        Command::Memory(command) => memory(&dir, command),
        Command::Modes(command) => modes(&dir, command),
        Command::Init { target } => crate::init::init(target.as_deref().unwrap_or(&dir)),
    };
    ExitCode::from(code)
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.verbose, matches!(cli.command, Command::Serve)) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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

fn print_problems(problems: &[Problem]) {
    let mut err = std::io::stderr().lock();
    for p in problems {
        let _ = writeln!(err, "{p}");
    }
    let _ = writeln!(
        err,
        "{} problem{} found",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
}

fn load(dir: &Path) -> Result<Config, u8> {
    Config::load(dir).map_err(|Problems(problems)| {
        print_problems(&problems);
        EXIT_INVALID
    })
}

/// A runtime on the calling thread alone (`run-cycle`, and the service's scheduling loop).
pub fn single_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

fn run_cycle(dir: &Path, args: RunCycleArgs) -> u8 {
    let config = match load(dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let todo_item = match args.todo {
        None => None,
        Some(n) => {
            let todo = match Todo::load(&dir.join(TODO_FILE)) {
                Ok(todo) => todo,
                Err(err) => {
                    eprintln!("{err}");
                    return EXIT_INVALID;
                }
            };
            match todo.item(n) {
                Some(item) if !item.done => Some(item.clone()),
                Some(item) => {
                    eprintln!(
                        "TODO.md:{}: item {n} is already done: {}",
                        item.line, item.text
                    );
                    return EXIT_INVALID;
                }
                None => {
                    eprintln!(
                        "TODO.md has no item {n} (it has {}; see `loop-orchestrator todo`)",
                        todo.items.len()
                    );
                    return EXIT_INVALID;
                }
            }
        }
    };
    let schedules: Vec<_> = match &args.schedule {
        Some(id) => match config.schedule(id) {
            Some(s) => vec![s.clone()],
            None => {
                let ids: Vec<&str> = config.schedules.iter().map(|s| s.id.as_str()).collect();
                eprintln!(
                    "schedules.json has no schedule {id:?} (expected one of: {})",
                    ids.join(", ")
                );
                return EXIT_INVALID;
            }
        },
        None if todo_item.is_some() => config
            .schedules
            .iter()
            .filter(|s| s.enabled)
            .take(1)
            .cloned()
            .collect(),
        None => config
            .schedules
            .iter()
            .filter(|s| s.enabled)
            .cloned()
            .collect(),
    };
    if schedules.is_empty() {
        eprintln!("schedules.json has no enabled schedule to run (name one with --schedule)");
        return EXIT_INVALID;
    }
    if args.dry_run {
        for s in &schedules {
            println!(
                "{}: would run {} mode(s) in {}",
                s.id,
                s.modes.len(),
                s.cwd.display()
            );
            for slug in &s.modes {
                let mode = &config.modes[slug];
                let command = cycle::resolve_command(mode, &s.cwd).map_or_else(
                    || {
                        format!(
                            "(not installed: {})",
                            mode.commands
                                .iter()
                                .map(|c| c[0].as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    |argv| argv.join(" "),
                );
                let timeout = mode.timeout.map_or(s.timeout, |t| t.min(s.timeout));
                println!(
                    "  {:<15} {command}  [prompt {:?}, timeout {}, on_failure {:?}{}]",
                    slug,
                    mode.prompt,
                    crate::duration::short(timeout),
                    mode.on_failure,
                    if mode.always { ", always" } else { "" }
                );
            }
        }
        return EXIT_OK;
    }

    let _registration = crate::leftover::register(dir);
    for reaped in crate::leftover::reap(dir) {
        eprintln!("{reaped}");
    }
    // One thread: a run-cycle runs one mode at a time, and worker threads would only add
    // their start-up and a cross-thread wake-up per step (figure 5 in BENCHMARKS.md).
    let Ok(rt) = single_thread_runtime() else {
        eprintln!("run-cycle: cannot start the runtime");
        return EXIT_FAILED;
    };
    // SPEC §4: a todo run gives way to schedule fires. Fires happen only in a running
    // service, so the run ends at the next instant of any enabled schedule while one serves.
    let preempt_at = todo_item
        .as_ref()
        .and_then(|_| next_fire_while_serving(dir, &config));
    rt.block_on(async {
        let recorder = crate::recorder::Recorder::inline_for_instance(dir);
        let cancel = CancellationToken::new();
        let interrupted = spawn_signal_cancel(cancel.clone());
        if todo_item.is_some() {
            tokio::spawn(give_way_to_fires(
                dir.to_path_buf(),
                preempt_at.clone(),
                cancel.clone(),
            ));
        }
        let mut code = EXIT_OK;
        for schedule in schedules {
            if cancel.is_cancelled() {
                break;
            }
            let mut lock = match LockFile::schedule(dir, &schedule.id) {
                Ok(lock) => lock,
                Err(err) => {
                    eprintln!("{err}");
                    return EXIT_FAILED;
                }
            };
            let guard = match lock.try_cycle(schedule.overlap == Overlap::Parallel) {
                Ok(guard) => guard,
                Err(LockError::Held { pid, .. }) => {
                    eprintln!(
                        "{}: a cycle of this schedule is already running (pid {pid})",
                        schedule.id
                    );
                    code = EXIT_BUSY;
                    continue;
                }
                Err(err) => {
                    eprintln!("{err}");
                    return EXIT_FAILED;
                }
            };
            println!(
                "{}: cycle started ({} modes)",
                schedule.id,
                schedule.modes.len()
            );
            let modes = schedule
                .modes
                .iter()
                .map(|m| config.modes[m].clone())
                .collect();
            let spec = CycleSpec {
                dir: dir.to_path_buf(),
                schedule: schedule.clone(),
                modes,
                memory: config.memory,
                scheduled_at: None,
                priority: if todo_item.is_some() {
                    Priority::Todo
                } else {
                    Priority::Schedule
                },
                todo_item: todo_item.clone(),
                dispatched_at: None,
                note: preempt_at.as_ref().map(|(id, at)| {
                    format!(
                        "a todo run: gives way to the fire of {id} at {}",
                        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )
                }),
            };
            let outcome = cycle::run(spec, &recorder, cancel.clone(), print_mode).await;
            drop(guard);
            match outcome {
                Ok(outcome) => {
                    println!(
                        "{}: cycle {} in {} ({})",
                        schedule.id,
                        outcome.status,
                        crate::duration::short(outcome.duration),
                        outcome.note
                    );
                    if outcome.status == Status::Interrupted {
                        code = EXIT_INTERRUPTED;
                    } else if outcome.any_failed && code == EXIT_OK {
                        code = EXIT_FAILED;
                    }
                }
                Err(err) => {
                    eprintln!("{}: {err}", schedule.id);
                    code = EXIT_FAILED;
                }
            }
        }
        recorder.flush().await;
        if interrupted.is_cancelled() && code == EXIT_OK {
            code = EXIT_INTERRUPTED;
        }
        code
    })
}

/// How long before a schedule fire a todo run is stopped.
const PREEMPT_LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(2);
/// How often a todo run looks again for a service and at schedules.json.
const PREEMPT_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Cancels a todo run a little ahead of the next schedule fire of a running service, so
/// that a mode that ends on SIGTERM has let go of the schedule's lock when the service
/// takes it. Every [`PREEMPT_RECHECK`] it looks again: a service started since, or an edit
/// of schedules.json (read again when its size, time or inode changed; a file that does not
/// validate leaves the last instant), can bring the fire closer.
async fn give_way_to_fires(
    dir: PathBuf,
    mut next: Option<(String, chrono::DateTime<chrono::Utc>)>,
    cancel: CancellationToken,
) {
    let schedules = dir.join("schedules.json");
    let stamp = |path: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    };
    let mut seen = stamp(&schedules);
    let mut config: Option<Config> = None;
    loop {
        let now = chrono::Utc::now();
        if let Some((id, at)) = &next
            && now >= *at - PREEMPT_LEAD
        {
            eprintln!("preempted: schedule {id} fires at {at}; stopping the todo run");
            cancel.cancel();
            return;
        }
        let nap = next
            .as_ref()
            .and_then(|(_, at)| (*at - PREEMPT_LEAD - now).to_std().ok())
            .map_or(PREEMPT_RECHECK, |until| until.min(PREEMPT_RECHECK));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = cancel.cancelled() => return,
        }
        let current = stamp(&schedules);
        if current != seen || config.is_none() {
            seen = current;
            match Config::load(&dir) {
                Ok(fresh) => config = Some(fresh),
                Err(_) if config.is_some() => {}
                Err(_) => continue,
            }
        }
        if let Some(config) = &config {
            next = next_fire_while_serving(&dir, config);
        }
    }
}

/// The next instant of any enabled schedule, and whose, when a service holds the instance.
fn next_fire_while_serving(
    dir: &Path,
    config: &Config,
) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    LockFile::service(dir).ok()?.probe()?;
    let now = chrono::Utc::now();
    config
        .schedules
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| Some((s.cron.next_after(now, s.timezone)?, s.id.clone())))
        .min()
        .map(|(at, id)| (id, at))
}

fn print_mode(report: &ModeReport) {
    let attempt = if report.attempt > 1 {
        format!(" (attempt {})", report.attempt)
    } else {
        String::new()
    };
    println!(
        "  {:<15} {:<11} {:>8}  {}{attempt}",
        report.mode,
        report.status.to_string(),
        crate::duration::short(report.duration),
        report.note
    );
}

/// Cancels `cancel` on SIGINT or SIGTERM, so running modes end as `interrupted` with their
/// rows written. Returns a token that is cancelled only when a signal arrived.
fn spawn_signal_cancel(cancel: CancellationToken) -> CancellationToken {
    use tokio::signal::unix::{SignalKind, signal};
    let signalled = CancellationToken::new();
    let flag = signalled.clone();
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
        flag.cancel();
        cancel.cancel();
    });
    signalled
}

fn validate(dir: &Path) -> u8 {
    let (config, mut problems) = match Config::load(dir) {
        Ok(config) => (Some(config), Vec::new()),
        Err(Problems(problems)) => (None, problems),
    };
    for (file, check) in [(TODO_FILE, true), (cycle::MEMORY_FILE, false)] {
        match std::fs::read(dir.join(file)) {
            Ok(bytes) => {
                if let Err(err) = std::str::from_utf8(&bytes) {
                    let (line, column) = crate::mode::line_col(
                        &String::from_utf8_lossy(&bytes[..err.valid_up_to()]),
                        err.valid_up_to(),
                    );
                    problems.push(Problem {
                        file: file.into(),
                        line,
                        column,
                        message: "not valid UTF-8".into(),
                    });
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && check => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => problems.push(Problem {
                file: file.into(),
                line: 1,
                column: 1,
                message: format!("cannot read: {err}"),
            }),
        }
    }
    if problems.is_empty() {
        let (schedules, modes) = config.map_or((0, 0), |c| (c.schedules.len(), c.modes.len()));
        println!("ok: {schedules} schedule(s), {modes} mode(s)");
        EXIT_OK
    } else {
        print_problems(&problems);
        EXIT_INVALID
    }
}

fn status(dir: &Path, json: bool) -> u8 {
    let now = Utc::now();
    let report = crate::status::report(dir, now);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", crate::status::render(&report, now));
    }
    EXIT_OK
}

fn next(dir: &Path, id: Option<&str>, count: usize) -> u8 {
    let config = match load(dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let schedules: Vec<_> = match id {
        Some(id) => match config.schedule(id) {
            Some(s) => vec![s],
            None => {
                eprintln!("schedules.json has no schedule {id:?}");
                return EXIT_INVALID;
            }
        },
        None => config.schedules.iter().collect(),
    };
    let now = Utc::now();
    for s in schedules {
        println!(
            "{}  \"{}\" in {}{}",
            s.id,
            s.cron.expr(),
            s.timezone.name(),
            if s.enabled { "" } else { " (disabled)" }
        );
        for at in s.cron.iter_after(now, s.timezone).take(count) {
            let local = at.with_timezone(&s.timezone);
            println!(
                "  {}  {}",
                local.format("%Y-%m-%d %H:%M:%S %Z (%:z)"),
                at.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
    }
    EXIT_OK
}

fn todo(dir: &Path, handoff: bool) -> u8 {
    let todo = match Todo::load(&dir.join(TODO_FILE)) {
        Ok(todo) => todo,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_INVALID;
        }
    };
    let (done, total) = todo.progress();
    let mut heading: Vec<String> = Vec::new();
    for item in &todo.items {
        if item.headings != heading {
            heading = item.headings.clone();
            println!("{}", heading.join(" > "));
        }
        println!(
            "  {:>3}. [{}] {}  (TODO.md:{})",
            item.number,
            if item.done { "x" } else { " " },
            item.text,
            item.line
        );
    }
    println!("{done}/{total} done");
    if handoff {
        match todo.open_items().next() {
            Some(item) => println!(
                "HANDOFF: next: item {}. {} (TODO.md:{}); {done}/{total} done",
                item.number, item.text, item.line
            ),
            None => println!("HANDOFF: every TODO.md item is done ({total}); plan the next ones"),
        }
    }
    EXIT_OK
}

fn modes(dir: &Path, command: ModesCommand) -> u8 {
    let (file, agent, force) = match command {
        ModesCommand::Import { file, agent, force } => (file, agent, force),
        ModesCommand::List => {
            let config = match load(dir) {
                Ok(config) => config,
                Err(code) => return code,
            };
            for m in crate::roomodes::list(&config) {
                let used = if m.schedules.is_empty() {
                    "no schedule".into()
                } else {
                    m.schedules.join(", ")
                };
                println!(
                    "{:<15} {:<24} {}  (used by: {used})",
                    m.slug, m.name, m.runs
                );
            }
            return EXIT_OK;
        }
    };
    let Some(agent) = crate::agent::Agent::from_name(&agent) else {
        eprintln!("unknown agent {agent:?} (expected one of: claude, codex, gemini, aider)");
        return EXIT_INVALID;
    };
    match crate::roomodes::import(dir, &file, agent, force) {
        Ok(report) => {
            report.written.iter().for_each(|p| println!("wrote {p}"));
            report
                .skipped
                .iter()
                .for_each(|p| println!("kept {p} (it exists; --force replaces it)"));
            if report.skipped.is_empty() {
                EXIT_OK
            } else {
                EXIT_INVALID
            }
        }
        Err(problems) => {
            print_problems(&problems);
            EXIT_INVALID
        }
    }
}

fn memory(dir: &Path, command: MemoryCommand) -> u8 {
    let store = cycle::memory_store(dir);
    let limits = Config::load(dir).map(|c| c.memory).unwrap_or_default();
    let limits = MemoryLimits {
        max_lines: limits.max_lines,
        target_lines: limits.target_lines,
    };
    match command {
        MemoryCommand::Show => {
            let text = std::fs::read_to_string(dir.join(cycle::MEMORY_FILE)).unwrap_or_default();
            print!("{text}");
            let doc = MemoryDoc::parse(&text);
            eprintln!(
                "{} lines of {} allowed (pruned to {}), {} entries",
                doc.line_count(),
                limits.max_lines,
                limits.target_lines,
                doc.entry_count()
            );
            EXIT_OK
        }
        MemoryCommand::Add { section, text } => {
            let section: Section = match section.parse() {
                Ok(section) => section,
                Err(_) => {
                    eprintln!(
                        "unknown section {section:?} (expected one of: Implementation Patterns, Commands, System Updates)"
                    );
                    return EXIT_INVALID;
                }
            };
            match store.add_and_prune(&[(section, text)], limits) {
                Ok(_) => EXIT_OK,
                Err(err) => {
                    eprintln!("{err}");
                    EXIT_FAILED
                }
            }
        }
        MemoryCommand::Prune { target_lines } => {
            let limits = MemoryLimits {
                target_lines: target_lines.unwrap_or(limits.target_lines),
                ..limits
            };
            match store.prune(limits, true) {
                Ok(report) => {
                    let duplicates = match report.duplicates {
                        0 => String::new(),
                        n => format!(" ({n} of them older copies of entries kept)"),
                    };
                    println!(
                        "pruned {} → {} lines; {} entries moved to {}{duplicates}",
                        report.lines_before,
                        report.lines_after,
                        report.archived,
                        cycle::ARCHIVE_FILE
                    );
                    EXIT_OK
                }
                Err(err) => {
                    eprintln!("{err}");
                    EXIT_FAILED
                }
            }
        }
    }
}
