//! `crash`: SIGKILL `serve` and `run-cycle` at random moments, restart, repeat; after every
//! round judge the files and the processes left behind.
//!
//! The instance keeps the supervisor busy where a crash hurts: schedules fire every 1–3 s,
//! modes print 20–150 MEMORY tokens each into a memory file whose `max_lines` (60) every
//! cycle exceeds, so nearly every cycle ends in a prune (archive append, temp file, rename);
//! long modes (2–8 s) are running when most kills land. Every mode is the fake agent and
//! starts a grandchild (`sleep 600`), recording both pids.
//!
//! A round starts `serve` (45 %), `run-cycle --schedule <random>` (35 %) or both (20 %),
//! kills them with SIGKILL 0–1500 ms (serve) / 0–700 ms (run-cycle) after the start, then
//! checks. Every 25th round a torn row (a writer that died mid-row) is appended by hand
//! before the start.
//!
//! Rules checked, and what "emitted" means:
//! - TSV: every line parses, except lines that were, when some round ended, the file's
//!   torn tail (a row cut by a crash, or an injected one): the next append terminates such
//!   a line and the rows after it must parse. No (cycle, mode, attempt) is written twice.
//! - Memory, "emitted": a MEMORY token counts as emitted once the supervisor has *recorded
//!   the run that printed it*, i.e. once the mode's row (any status but the `interrupted` rows
//!   the leftover reaper writes for runs whose supervisor died) is in task_timing.tsv: a
//!   supervisor killed while a mode runs never saw the run end and cannot owe its entries.
//!   Rule R (recorded ⇒ kept): every token of a recorded run is in persistent-memory.md or
//!   the archive. Rule D (durable): a token once seen in either file stays in one of them
//!   through every later crash and prune. Tokens of runs never recorded are counted only.
//! - Orphans: after a kill, every recorded pid (mode leader and grandchild) still alive is a
//!   leftover (identified by pid and start time; a zombie is not alive). The next start of
//!   `serve` or `run-cycle` must end them: a leftover still alive when a later process that
//!   lived at least 1 s is killed is a violation (the harness then kills it itself); a start
//!   killed sooner is inconclusive and the leftover carries over.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use serde_json::json;

use crate::util::{self, Report, Res, RunKey};

const REAP_WINDOW: Duration = Duration::from_millis(1000);
const REAPER_NOTE: &str = "left over by supervisor";
const SCHEDULES: [&str; 4] = ["burst-a", "burst-b", "long", "mix"];

pub struct Options {
    pub rounds: usize,
}

#[derive(Clone, Copy, Debug)]
struct Leftover {
    pid: i32,
    start: Option<u64>,
    /// The mode's group: the leader's pid.
    pgid: i32,
    grandchild: bool,
}

#[derive(Default)]
struct Stats {
    rounds_serve: usize,
    rounds_run_cycle: usize,
    rounds_both: usize,
    run_cycle_done_before_kill: usize,
    kills_with_modes_running: usize,
    kills_with_memory_temp: usize,
    kills_with_torn_tsv: usize,
    kills_with_torn_archive: usize,
    rounds_with_rows: usize,
    rounds_with_prune: usize,
    torn_injected: usize,
    torn_repaired: usize,
    leftovers_seen: usize,
    leftovers_ended_by_restart: usize,
    leftovers_survived: usize,
    survivor_examples: Vec<String>,
    runs_recorded: usize,
    tokens_of_recorded_runs: usize,
    tokens_lost_recorded: usize,
    lost_examples: Vec<String>,
    recorded_runs_losing_tokens: usize,
    tokens_lost_durable: usize,
    bad_lines_unexplained: usize,
    bad_examples: Vec<String>,
    doubled_rows: usize,
    doubled_examples: Vec<String>,
}

struct Harness {
    bin: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    stats: Stats,
    allowed_bad: HashSet<usize>,
    archive: util::ArchiveScan,
    memory_only: HashSet<String>,
    checked_runs: HashSet<RunKey>,
    pids_offset: usize,
    leftovers: Vec<Leftover>,
    seen_leftovers: HashSet<(i32, Option<u64>)>,
    prev_rows: usize,
    prev_archive_len: u64,
}

fn build(dir: &Path) -> Res<()> {
    let agent = util::write_agent(dir)?;
    let agent = agent.to_string_lossy().into_owned();
    let ledger = dir.join("ledger");
    fs::create_dir_all(&ledger).map_err(|e| e.to_string())?;
    let ledger = ledger.to_string_lossy().into_owned();
    let pids = dir.join("pids.txt").to_string_lossy().into_owned();
    for slug in ["burst", "burst2"] {
        util::write_mode(
            dir,
            slug,
            &[&agent],
            &format!(
                "on_failure = \"continue\"\nkill_grace = \"1s\"\nenv = {{ REL_TOKENS = \"20-150\", REL_SLEEP_MS = \"0-300\", REL_FAIL_PCT = \"10\", REL_LEDGER = {ledger:?}, REL_PIDS = {pids:?} }}"
            ),
        )?;
    }
    util::write_mode(
        dir,
        "long",
        &[&agent],
        &format!(
            "on_failure = \"continue\"\nkill_grace = \"1s\"\nenv = {{ REL_TOKENS = \"3-5\", REL_SLEEP_MS = \"2000-8000\", REL_LEDGER = {ledger:?}, REL_PIDS = {pids:?} }}"
        ),
    )?;
    let doc = json!({
        "version": 1,
        "timezone": "UTC",
        "defaults": { "timeout": "30s", "max_failures": 1_000_000 },
        "memory": { "max_lines": 60, "target_lines": 40 },
        "max_concurrent_cycles": 8,
        "shutdown_grace": "5s",
        "schedules": [
            { "id": "burst-a", "task": "crash", "cron": "* * * * * *", "modes": ["burst", "burst2"], "overlap": "parallel" },
            { "id": "burst-b", "task": "crash", "cron": "*/2 * * * * *", "modes": ["burst"], "overlap": "queue" },
            { "id": "long", "task": "crash", "cron": "* * * * * *", "modes": ["long"], "overlap": "skip" },
            { "id": "mix", "task": "crash", "cron": "*/3 * * * * *", "modes": ["burst", "long", "burst2"], "overlap": "parallel" },
        ],
    });
    util::write(
        &dir.join("schedules.json"),
        &serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )?;
    util::write(&dir.join("TODO.md"), "# TODO\n- [ ] crash\n")
}

pub fn run(opts: Options) -> Res<bool> {
    let bin = util::orchestrator_bin()?;
    let tmp = util::instance_dir("crash")?;
    let dir = tmp.path().to_path_buf();
    build(&dir)?;
    let log = dir.join("supervisors.log");
    println!("crash: {} rounds, instance {}", opts.rounds, dir.display());
    let mut h = Harness {
        bin,
        log,
        dir,
        stats: Stats::default(),
        allowed_bad: HashSet::new(),
        archive: util::ArchiveScan::default(),
        memory_only: HashSet::new(),
        checked_runs: HashSet::new(),
        pids_offset: 0,
        leftovers: Vec::new(),
        seen_leftovers: HashSet::new(),
        prev_rows: 0,
        prev_archive_len: 0,
    };
    let mut rng = rand::rng();
    let started = Instant::now();
    for round in 0..opts.rounds {
        if round % 25 == 24 {
            h.inject_torn_row()?;
        }
        h.round(&mut rng)?;
        if (round + 1) % 50 == 0 {
            println!(
                "  round {}/{} ({:.0} s): leftovers survived {}, tokens lost {}, unexplained bad lines {}",
                round + 1,
                opts.rounds,
                started.elapsed().as_secs_f64(),
                h.stats.leftovers_survived,
                h.stats.tokens_lost_recorded + h.stats.tokens_lost_durable,
                h.stats.bad_lines_unexplained
            );
        }
    }
    let final_ok = h.final_clean_run()?;
    let stray = h.kill_all_recorded();
    let mut report = h.report(opts.rounds, started.elapsed(), final_ok, stray);
    report.info("instance", h.dir.display());
    report.print("crash");
    let ok = report.violations.is_empty();
    util::finish_dir(tmp, !ok);
    Ok(ok)
}

impl Harness {
    fn inject_torn_row(&mut self) -> Res<()> {
        let path = self.dir.join("task_timing.tsv");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| e.to_string())?;
        file.write_all(b"2026-01-01T00:00:00.000Z\t2026-01-01T00:00:00.000Z\t2026-01-01T00:00:0")
            .map_err(|e| e.to_string())?;
        self.stats.torn_injected += 1;
        let timing = util::read_timing(&self.dir)?;
        self.allowed_bad.insert(timing.lines + 1);
        Ok(())
    }

    fn spawn(&self, args: &[&str]) -> Res<Child> {
        let command = util::orchestrator(&self.bin, &self.dir, args);
        util::spawn_logged(command, &self.log)
    }

    fn round(&mut self, rng: &mut impl Rng) -> Res<()> {
        let kind = rng.random_range(0..100);
        let mut procs: Vec<Child> = Vec::new();
        let with_serve = !(45..80).contains(&kind);
        let with_run_cycle = kind >= 45;
        if with_serve {
            procs.push(self.spawn(&["serve"])?);
        }
        if with_run_cycle {
            let schedule = SCHEDULES[rng.random_range(0..SCHEDULES.len())];
            procs.push(self.spawn(&["run-cycle", "--schedule", schedule])?);
        }
        let delay = match (with_serve, with_run_cycle) {
            (true, false) => {
                self.stats.rounds_serve += 1;
                Duration::from_millis(rng.random_range(0..=1500))
            }
            (false, true) => {
                self.stats.rounds_run_cycle += 1;
                Duration::from_millis(rng.random_range(0..=700))
            }
            _ => {
                self.stats.rounds_both += 1;
                Duration::from_millis(rng.random_range(0..=1500))
            }
        };
        let t0 = Instant::now();
        let before = std::mem::take(&mut self.leftovers);
        while t0.elapsed() < delay {
            if procs
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // A start that ran to its end, or lived long enough, had its chance to reap.
        let all_exited = procs
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))));
        let lived = if all_exited {
            REAP_WINDOW.max(t0.elapsed())
        } else {
            t0.elapsed()
        };
        let mut modes_running = false;
        for child in &mut procs {
            if matches!(child.try_wait(), Ok(None)) {
                modes_running |= !util::children(child.id() as i32).is_empty();
                util::signal(child.id() as i32, Signal::SIGKILL);
            } else if with_run_cycle && !with_serve {
                self.stats.run_cycle_done_before_kill += 1;
            }
        }
        for child in &mut procs {
            let _ = child.wait();
        }
        if modes_running {
            self.stats.kills_with_modes_running += 1;
        }

        // Leftovers of earlier supervisors: this start had to end them.
        for l in before {
            if !util::alive(l.pid, l.start) {
                self.stats.leftovers_ended_by_restart += 1;
            } else if lived >= REAP_WINDOW {
                self.stats.leftovers_survived += 1;
                if self.stats.survivor_examples.len() < 3 {
                    self.stats.survivor_examples.push(format!(
                        "pid {} ({}) survived a start that lived {} ms",
                        l.pid,
                        if l.grandchild {
                            "grandchild"
                        } else {
                            "mode leader"
                        },
                        lived.as_millis()
                    ));
                }
                util::killpg(l.pgid, Signal::SIGKILL);
                util::signal(l.pid, Signal::SIGKILL);
            } else {
                self.leftovers.push(l);
            }
        }
        self.collect_leftovers();
        self.check_files()
    }

    /// Recorded pids that are alive now that every supervisor is dead.
    fn collect_leftovers(&mut self) {
        let text = util::read_lossy(&self.dir.join("pids.txt"));
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        let new = &text[self.pids_offset.min(complete)..complete];
        self.pids_offset = complete;
        let mut recorded: Vec<(i32, i32)> = Vec::new();
        for line in new.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(Ok(a)), Some(Ok(b))) =
                (f.get(3).map(|a| a.parse()), f.get(4).map(|b| b.parse()))
            {
                recorded.push((a, b));
            }
        }
        // Older records whose processes are still alive were carried over already; new
        // records are checked now.
        for (leader, grandchild) in recorded {
            for (pid, is_gc) in [(leader, false), (grandchild, true)] {
                let start = util::start_time(pid);
                if start.is_some()
                    && util::alive(pid, start)
                    && self.seen_leftovers.insert((pid, start))
                {
                    self.stats.leftovers_seen += 1;
                    self.leftovers.push(Leftover {
                        pid,
                        start,
                        pgid: leader,
                        grandchild: is_gc,
                    });
                }
            }
        }
    }

    fn check_files(&mut self) -> Res<()> {
        let dir = self.dir.clone();
        // Traces of where the kill landed.
        if fs::read_dir(&dir)
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".persistent-memory.md.tmp")
                })
            })
            .unwrap_or(false)
        {
            self.stats.kills_with_memory_temp += 1;
        }
        let archive_path = dir.join("persistent-memory.archive.md");
        let archive_bytes = fs::read(&archive_path).unwrap_or_default();
        if !archive_bytes.is_empty() && archive_bytes.last() != Some(&b'\n') {
            self.stats.kills_with_torn_archive += 1;
        }
        if archive_bytes.len() as u64 > self.prev_archive_len {
            self.stats.rounds_with_prune += 1;
        }
        self.prev_archive_len = archive_bytes.len() as u64;

        // TSV.
        let timing = util::read_timing(&dir)?;
        if timing.torn_tail {
            self.stats.kills_with_torn_tsv += 1;
            self.allowed_bad.insert(timing.lines + 1);
        }
        if timing.rows.len() > self.prev_rows {
            self.stats.rounds_with_rows += 1;
        }
        self.prev_rows = timing.rows.len();
        let mut repaired = 0;
        for bad in &timing.bad_lines {
            if self.allowed_bad.contains(&bad.line) {
                if bad.line <= timing.lines {
                    repaired += 1;
                }
            } else {
                self.stats.bad_lines_unexplained += 1;
                if self.stats.bad_examples.len() < 3 {
                    self.stats.bad_examples.push(bad.to_string());
                }
                // Count each once.
                self.allowed_bad.insert(bad.line);
            }
        }
        self.stats.torn_repaired = self.stats.torn_repaired.max(repaired);
        let doubled = util::doubled_rows(&timing.rows);
        if doubled.len() > self.stats.doubled_rows {
            for d in doubled.iter().skip(self.stats.doubled_rows) {
                if self.stats.doubled_examples.len() < 3 {
                    let notes: Vec<String> = timing
                        .rows
                        .iter()
                        .filter(|r| (&r.cycle, &r.mode, r.attempt) == (&d.0, &d.1, d.2))
                        .map(|r| format!("{}: {}", r.status, r.note))
                        .collect();
                    self.stats
                        .doubled_examples
                        .push(format!("{d:?} -> {notes:?}"));
                }
            }
            self.stats.doubled_rows = doubled.len();
        }

        // Memory: rule D, then rule R.
        self.archive.update(&archive_path);
        let memory = util::memory_tokens(&dir);
        for token in &self.memory_only {
            if !memory.contains(token) && !self.archive.tokens.contains(token) {
                self.stats.tokens_lost_durable += 1;
                if self.stats.lost_examples.len() < 5 {
                    self.stats
                        .lost_examples
                        .push(format!("{token} was kept, then lost"));
                }
            }
        }
        self.memory_only = memory
            .iter()
            .filter(|t| !self.archive.tokens.contains(*t))
            .cloned()
            .collect();
        let recorded: Vec<RunKey> = timing
            .rows
            .iter()
            .filter(|r| r.mode != "cycle" && !r.note.contains(REAPER_NOTE))
            .map(|r| (r.cycle.clone(), r.mode.clone(), r.attempt))
            .filter(|k| !self.checked_runs.contains(k))
            .collect();
        if !recorded.is_empty() {
            let ledger = util::read_ledger(&dir.join("ledger"));
            for key in recorded {
                self.checked_runs.insert(key.clone());
                self.stats.runs_recorded += 1;
                let Some(tokens) = ledger.get(&key) else {
                    continue;
                };
                let mut lost = 0;
                for token in tokens {
                    self.stats.tokens_of_recorded_runs += 1;
                    if !memory.contains(token) && !self.archive.tokens.contains(token) {
                        lost += 1;
                    }
                }
                if lost > 0 {
                    self.stats.tokens_lost_recorded += lost;
                    self.stats.recorded_runs_losing_tokens += 1;
                    if self.stats.lost_examples.len() < 5 {
                        let status = timing
                            .rows
                            .iter()
                            .find(|r| (&r.cycle, &r.mode, r.attempt) == (&key.0, &key.1, key.2))
                            .map(|r| r.status.to_string())
                            .unwrap_or_default();
                        self.stats.lost_examples.push(format!(
                            "run {key:?} ({status}) recorded, {lost} of {} tokens in neither file",
                            tokens.len()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A last `serve` that runs long enough to reap, then a clean SIGTERM, then the checks.
    fn final_clean_run(&mut self) -> Res<bool> {
        let before = std::mem::take(&mut self.leftovers);
        let mut serve = self.spawn(&["serve"])?;
        std::thread::sleep(Duration::from_secs(4));
        for l in before {
            if util::alive(l.pid, l.start) {
                self.stats.leftovers_survived += 1;
                if self.stats.survivor_examples.len() < 3 {
                    self.stats
                        .survivor_examples
                        .push(format!("pid {} survived the final 4 s serve", l.pid));
                }
                util::killpg(l.pgid, Signal::SIGKILL);
            } else {
                self.stats.leftovers_ended_by_restart += 1;
            }
        }
        util::signal(serve.id() as i32, Signal::SIGTERM);
        let status = util::wait_timeout(&mut serve, Duration::from_secs(30));
        if status.is_none() {
            util::signal(serve.id() as i32, Signal::SIGKILL);
            let _ = serve.wait();
        }
        // After a clean stop nothing of it may be left either.
        self.collect_leftovers();
        let after_clean = self.leftovers.len();
        for l in std::mem::take(&mut self.leftovers) {
            util::killpg(l.pgid, Signal::SIGKILL);
        }
        self.check_files()?;
        Ok(status.is_some_and(|s| s.code() == Some(0)) && after_clean == 0)
    }

    /// Harness hygiene: whatever recorded process still lives is killed (and counted).
    fn kill_all_recorded(&self) -> usize {
        let text = util::read_lossy(&self.dir.join("pids.txt"));
        let mut killed = 0;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            for i in [3, 4] {
                if let Some(pid) = f.get(i).and_then(|p| p.parse::<i32>().ok()) {
                    // Only processes that are still ours: a sleep or bash of this instance.
                    let cmdline = util::read_lossy(Path::new(&format!("/proc/{pid}/cmdline")));
                    let environ = util::read_lossy(Path::new(&format!("/proc/{pid}/environ")));
                    if util::alive(pid, None)
                        && (cmdline.contains("sleep") || cmdline.contains("agent.sh"))
                        && environ.contains(&*self.dir.to_string_lossy())
                    {
                        util::signal(pid, Signal::SIGKILL);
                        killed += 1;
                    }
                }
            }
        }
        killed
    }

    fn report(&self, rounds: usize, took: Duration, final_ok: bool, stray: usize) -> Report {
        let s = &self.stats;
        let log = util::read_lossy(&self.log);
        let reaper_lines = log.matches("leftover").count();
        let panics = log.matches("panicked").count();
        let mut r = Report::default();
        r.info("rounds", format!("{rounds} in {:.0} s", took.as_secs_f64()));
        r.info(
            "rounds: serve / run-cycle / both",
            format!(
                "{} / {} / {}",
                s.rounds_serve, s.rounds_run_cycle, s.rounds_both
            ),
        );
        r.info(
            "run-cycle finished before its kill",
            s.run_cycle_done_before_kill,
        );
        r.info("kills while modes ran", s.kills_with_modes_running);
        r.info(
            "kills leaving a memory temp file (mid update)",
            s.kills_with_memory_temp,
        );
        r.info("kills leaving a torn TSV tail", s.kills_with_torn_tsv);
        r.info(
            "kills leaving a torn archive tail",
            s.kills_with_torn_archive,
        );
        r.info(
            "rounds that appended rows / archived (pruned)",
            format!("{} / {}", s.rounds_with_rows, s.rounds_with_prune),
        );
        r.info(
            "torn rows injected / terminated by a later append",
            format!("{} / {}", s.torn_injected, s.torn_repaired),
        );
        r.check(
            "TSV lines that do not parse, other than terminated torn tails",
            format!("{} {:?}", s.bad_lines_unexplained, s.bad_examples),
            s.bad_lines_unexplained == 0,
        );
        r.check(
            "rows written twice (cycle, mode, attempt)",
            format!("{} {:?}", s.doubled_rows, s.doubled_examples),
            s.doubled_rows == 0,
        );
        r.info("mode runs recorded (rows) and checked", s.runs_recorded);
        r.info("MEMORY tokens of recorded runs", s.tokens_of_recorded_runs);
        let ledger = util::read_ledger(&self.dir.join("ledger"));
        let printed: usize = ledger.values().map(Vec::len).sum();
        r.info("MEMORY tokens printed in all (ledger)", printed);
        r.check(
            "rule R: tokens of recorded runs in neither file",
            format!(
                "{} tokens in {} runs {:?}",
                s.tokens_lost_recorded, s.recorded_runs_losing_tokens, s.lost_examples
            ),
            s.tokens_lost_recorded == 0,
        );
        r.check(
            "rule D: tokens kept once, later in neither file",
            s.tokens_lost_durable,
            s.tokens_lost_durable == 0,
        );
        r.check(
            "archive never shrank",
            !self.archive.shrank,
            !self.archive.shrank,
        );
        r.info("leftover processes seen after kills", s.leftovers_seen);
        r.info(
            "leftovers ended by the next start",
            s.leftovers_ended_by_restart,
        );
        r.check(
            "leftovers alive after a start that lived >= 1 s",
            format!("{} {:?}", s.leftovers_survived, s.survivor_examples),
            s.leftovers_survived == 0,
        );
        r.info("'leftover' mentions in the supervisors' log", reaper_lines);
        r.check(
            "final serve: clean SIGTERM exit 0, nothing left",
            final_ok,
            final_ok,
        );
        r.info("recorded processes the harness killed at the end", stray);
        r.check("panics in the supervisors' log", panics, panics == 0);
        r
    }
}
