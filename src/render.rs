//! The text of what [`crate::app`] returns, as the CLI prints it and the MCP tools return it
//! beside their structured results. Plain text, one fact per line,
//! stable enough for a person to grep; `--json` forms are serde's.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::app::memory::Shown;
use crate::app::next::NextFires;
use crate::app::resume::Resumed;
use crate::app::run_cycle::{Plan, Progress};
use crate::app::status::{ClusterReport, Report};
use crate::duration::short;
use crate::instance;
use crate::memory::PruneReport;
use crate::todo::Todo;

/// Prints `run-cycle`'s progress as it happens: a line per cycle start, mode and cycle end on
/// stdout; what went wrong around them on stderr.
pub fn progress(event: Progress<'_>) {
    match event {
        Progress::Reaped(reaped) => eprintln!("{reaped}"),
        Progress::CycleStarted { schedule, modes } => {
            println!("{schedule}: cycle started ({modes} modes)")
        }
        Progress::ModeStarted { .. } => {}
        Progress::ModeFinished { report, .. } => {
            let attempt = if report.attempt > 1 {
                format!(" (attempt {})", report.attempt)
            } else {
                String::new()
            };
            println!(
                "  {:<15} {:<11} {:>8}  {}{attempt}",
                report.mode,
                report.status.to_string(),
                short(report.duration),
                report.note
            );
        }
        Progress::CycleFinished { schedule, outcome } => println!(
            "{schedule}: cycle {} in {} ({})",
            outcome.status,
            short(outcome.duration),
            outcome.note
        ),
        Progress::Busy { schedule, pid } => {
            eprintln!("{schedule}: a cycle of this schedule is already running (pid {pid})")
        }
        Progress::Preempted { schedule, at } => {
            eprintln!("preempted: schedule {schedule} fires at {at}; stopping the todo run")
        }
        Progress::Held { schedule, note } => {
            eprintln!("{schedule}: skipped: {note} (--ignore-limits runs it anyway)")
        }
    }
}

/// `run-cycle --dry-run`.
pub fn plans(plans: &[Plan]) -> String {
    let mut out = String::new();
    for plan in plans {
        let _ = writeln!(
            out,
            "{}: would run {} mode(s) in {}",
            plan.schedule,
            plan.modes.len(),
            plan.cwd
        );
        for mode in &plan.modes {
            let command = match &mode.argv {
                Some(argv) => argv.join(" "),
                None => format!("(not installed: {})", mode.missing.join(", ")),
            };
            let output = match mode.output {
                Some(format) => format!(", output {}", format.name()),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<15} {command}  [prompt {:?}{output}, timeout {}, on_failure {:?}{}]",
                mode.slug,
                mode.prompt,
                short(mode.timeout),
                mode.on_failure,
                if mode.always { ", always" } else { "" }
            );
        }
    }
    out
}

pub fn next(fires: &[NextFires]) -> String {
    let mut out = String::new();
    for s in fires {
        let _ = writeln!(
            out,
            "{}  \"{}\" in {}{}",
            s.schedule,
            s.cron,
            s.timezone,
            if s.enabled { "" } else { " (disabled)" }
        );
        for fire in &s.fires {
            let _ = writeln!(
                out,
                "  {}  {}",
                fire.local,
                fire.at.format("%Y-%m-%dT%H:%M:%SZ")
            );
        }
    }
    out
}

pub fn todo(todo: &Todo) -> String {
    let mut out = String::new();
    let mut heading: Vec<String> = Vec::new();
    for item in &todo.items {
        if item.headings != heading {
            heading = item.headings.clone();
            let _ = writeln!(out, "{}", heading.join(" > "));
        }
        let _ = writeln!(
            out,
            "  {:>3}. [{}] {}  ({}:{})",
            item.number,
            if item.done { "x" } else { " " },
            item.text,
            instance::TODO,
            item.line
        );
    }
    let (done, total) = todo.progress();
    let _ = writeln!(out, "{done}/{total} done");
    out
}

/// `modes list`.
pub fn modes(modes: &[crate::roomodes::ModeListing]) -> String {
    let mut out = String::new();
    for m in modes {
        let used = if m.schedules.is_empty() {
            "no schedule".into()
        } else {
            m.schedules.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<15} {:<24} {}  (used by: {used})",
            m.slug, m.name, m.runs
        );
    }
    out
}

pub fn resumed(resumed: &Resumed) -> String {
    let id = &resumed.schedule;
    let everywhere = if resumed.cluster == Some(true) {
        " (lifted on every node of the cluster)"
    } else {
        ""
    };
    match (
        resumed.was_escalated || resumed.was_paused,
        resumed.service_pid,
    ) {
        (false, _) => format!("{id}: neither escalated nor paused; nothing to resume"),
        (true, _) if !everywhere.is_empty() => {
            format!("{id}: resumed{everywhere}; each node fires it again from its next instant")
        }
        (true, Some(pid)) => {
            format!("{id}: resumed; the service (pid {pid}) fires it again from its next instant")
        }
        (true, None) => format!("{id}: resumed; no service runs on this directory"),
    }
}

pub fn memory_use(shown: &Shown) -> String {
    match &shown.limits {
        Some(limits) => format!(
            "{} lines of {} allowed (pruned to {}), {} entries",
            shown.lines, limits.max_lines, limits.target_lines, shown.entries
        ),
        None => format!(
            "{} lines, {} entries (limits unknown: schedules.json does not validate)",
            shown.lines, shown.entries
        ),
    }
}

pub fn pruned(report: &PruneReport) -> String {
    let duplicates = match report.duplicates {
        0 => String::new(),
        n => format!(" ({n} of them older copies of entries kept)"),
    };
    format!(
        "pruned {} → {} lines; {} entries moved to {}{duplicates}",
        report.lines_before,
        report.lines_after,
        report.archived,
        instance::ARCHIVE
    )
}

/// `$0.0246 today of a $0.02 budget (day ends 2026-12-03 00:00 UTC)`.
fn spending(s: &crate::app::status::Spending) -> String {
    let budget = match s.max_cost_usd_per_day {
        Some(max) => format!(" of a ${} budget", crate::limits::dollars(max)),
        None => " (no budget)".to_string(),
    };
    format!(
        "${} today{budget}; the day ends {} ({})",
        crate::limits::dollars(s.cost_today_usd),
        s.day_ends_at.format("%Y-%m-%d %H:%M UTC"),
        s.timezone
    )
}

/// The plain-text form of a report.
pub fn status(report: &Report, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "instance  {}", report.dir);
    let _ = match &report.service.pid {
        Some(pid) => writeln!(out, "service   running (pid {pid})"),
        None => writeln!(out, "service   not running"),
    };
    if let Some(link) = &report.service.cluster {
        let since = link
            .since
            .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        let _ = match link.state.as_str() {
            "up" => writeln!(
                out,
                "cluster   node {} connected{since} ({})",
                link.node, link.url
            ),
            "down" => writeln!(
                out,
                "cluster   node {}: DATABASE UNREACHABLE{since} ({}); claiming nothing, so firing nothing; retrying ({})",
                link.node,
                link.error.as_deref().unwrap_or("no answer"),
                link.url
            ),
            "refused" => writeln!(
                out,
                "cluster   node {}: REFUSED: {}; claiming nothing ({})",
                link.node,
                link.error.as_deref().unwrap_or("refused"),
                link.url
            ),
            other => writeln!(out, "cluster   node {}: {other} ({})", link.node, link.url),
        };
    }
    if let Some(reload) = &report.service.last_reload {
        let when = reload.at.format("%Y-%m-%d %H:%M:%S UTC");
        if reload.ok {
            let _ = writeln!(out, "reload    ok at {when} ({})", reload.trigger);
        } else {
            let _ = writeln!(
                out,
                "reload    REJECTED at {when} ({}); the last good configuration runs:",
                reload.trigger
            );
            for p in &reload.problems {
                let _ = writeln!(out, "  {p}");
            }
        }
    }
    if !report.config_problems.is_empty() {
        let _ = writeln!(
            out,
            "config    INVALID ({} problems):",
            report.config_problems.len()
        );
        for p in &report.config_problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    let _ = writeln!(out);
    for s in &report.schedules {
        let state = if s.escalated {
            format!(
                "ESCALATED: paused until its entry changes or `resume {}`",
                s.id
            )
        } else if let Some(hold) = &s.hold {
            format!("PAUSED: {}", hold.note)
        } else if !s.enabled {
            "disabled".to_string()
        } else if let Some(pid) = &s.running {
            format!("running (pid {pid})")
        } else {
            "idle".to_string()
        };
        let _ = writeln!(
            out,
            "{}  [{}]  cron \"{}\" {}",
            s.id, state, s.cron, s.timezone
        );
        if let (Some(next), Some(local)) = (s.next_fire, &s.next_fire_local) {
            let secs = (next - now).num_seconds().max(0);
            let _ = writeln!(
                out,
                "  next      {local} (in {})",
                short(std::time::Duration::from_secs(secs as u64))
            );
        }
        match &s.last_cycle {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  last      {} at {} in {}: {}",
                    c.status,
                    c.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    short(std::time::Duration::from_millis(c.duration_ms)),
                    c.note
                );
            }
            None => {
                let _ = writeln!(out, "  last      never ran");
            }
        }
        let _ = writeln!(
            out,
            "  failures  {} in a row (escalates at {})",
            s.failure_streak, s.max_failures
        );
        if s.spending.cost_today_usd > 0.0 || s.spending.max_cost_usd_per_day.is_some() {
            let _ = writeln!(out, "  cost      {}", spending(&s.spending));
        }
    }
    if let Some(budget) = &report.budget
        && (budget.cost_today_usd > 0.0 || budget.max_cost_usd_per_day.is_some())
    {
        let _ = writeln!(out);
        let _ = writeln!(out, "cost      all schedules: {}", spending(budget));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "todo      {}/{} done",
        report.todo.done, report.todo.total
    );
    if let Some(next) = &report.todo.next_open {
        let _ = writeln!(out, "  next     {next}");
    }
    let _ = writeln!(
        out,
        "memory    {}/{} lines, {} entries",
        report.memory.lines, report.memory.max_lines, report.memory.entries
    );
    let _ = writeln!(out, "timing    {} rows", report.timing.rows);
    if !report.timing.bad_lines.is_empty() {
        let _ = writeln!(
            out,
            "  {} bad lines (skipped):",
            report.timing.bad_lines.len()
        );
        for b in report.timing.bad_lines.iter().take(10) {
            let _ = writeln!(out, "  {b}");
        }
    }
    out
}

/// `status --cluster`.
pub fn cluster_status(report: &ClusterReport) -> String {
    let mut out = String::new();
    let now = report.db_now;
    let _ = writeln!(out, "cluster   {}", report.url);
    let _ = writeln!(
        out,
        "database  time {} (leases and heartbeats use it)",
        now.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    let _ = writeln!(out, "this node {}", report.node);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:>12} {:>8}  {:<10} {:<22} started",
        "node", "state", "heartbeat", "running", "version", "schedules hash"
    );
    for n in &report.nodes {
        let state = match (n.live, n.stopped_at) {
            (true, _) => "live",
            (false, Some(_)) => "stopped",
            (false, None) => "LOST",
        };
        let hash = if n.hash_differs {
            format!("{} DIFFERS", short_hash(&n.schedules_hash))
        } else {
            short_hash(&n.schedules_hash).to_string()
        };
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:>12} {:>8}  {:<10} {:<22} {}",
            n.name,
            state,
            format!(
                "{} ago",
                short(std::time::Duration::from_millis(n.heartbeat_age_ms))
            ),
            n.running_cycles,
            n.version,
            hash,
            n.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if report.nodes.iter().any(|n| n.hash_differs) {
        let _ = writeln!(
            out,
            "  a node marked DIFFERS runs other schedules than the majority ({}): give every node the same schedules.json",
            report.majority_hash.as_deref().map_or("none", short_hash)
        );
    }
    let _ = writeln!(out);
    for s in &report.schedules {
        let mut line = format!(
            "{}{}",
            s.id,
            if s.configured {
                ""
            } else {
                " (not in this schedules.json)"
            }
        );
        if let Some(e) = &s.escalated {
            line.push_str(&format!(
                "  [ESCALATED on {} after {} failures at {}{}]",
                e.node,
                e.failures,
                e.at.format("%Y-%m-%d %H:%M:%S UTC"),
                if e.applies {
                    ""
                } else {
                    "; another entry, so not in force here"
                }
            ));
        }
        if let Some(until) = s.paused_until {
            line.push_str(&format!(
                "  [paused until {}]",
                until.format("%H:%M:%S UTC")
            ));
        }
        let _ = writeln!(out, "{line}");
        for r in &s.running {
            let _ = writeln!(
                out,
                "  running   {} attempt {} on {}{}",
                r.scheduled_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.attempt,
                r.node,
                if r.expired {
                    " (lease EXPIRED: a survivor takes it over)"
                } else {
                    ""
                }
            );
        }
        match &s.last {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  last      {} attempt {} on {}: {}",
                    c.scheduled_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    c.attempt,
                    c.node,
                    c.status.as_deref().unwrap_or(&c.state)
                );
            }
            None => {
                let _ = writeln!(out, "  last      never claimed");
            }
        }
    }
    out
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
