//! The `report` command: its arguments, the daily budgets it reads from schedules.json,
//! and where each rendering goes (text or JSON on stdout, the page to `--html FILE`).
//!
//! schedules.json is read loosely, for `max_cost_usd_per_day` only (on a schedule or in
//! `defaults`): a report needs nothing but the timing file, so a missing or invalid
//! schedules.json leaves the budgets out rather than failing.
//! Exit: 0, 1 when the timing file cannot be read or the page cannot be written, 2 for a
//! bad argument (clap's usage errors, an unknown `--since`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{Options, SINCE_FORMS, Since};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Rows that started since then: a duration back from now (7d, 36h, 90m), a date
    /// (2026-11-20, midnight UTC) or an RFC 3339 time (2026-11-20T08:00:00Z).
    #[arg(long, value_name = "DUR|DATE", default_value = "7d", value_parser = parse_since)]
    pub since: Since,
    /// Only this schedule.
    #[arg(long, value_name = "ID")]
    pub schedule: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML page (inline SVG and CSS).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn parse_since(text: &str) -> Result<Since, String> {
    text.parse().map_err(|_| format!("expected {SINCE_FORMS}"))
}

pub fn run(dir: &Path, args: ReportArgs) -> u8 {
    let now = Utc::now();
    let options = Options {
        since: args.since.resolve(now),
        schedule: args.schedule,
        budgets: budgets(dir),
    };
    let path = dir.join(crate::cycle::TIMING_FILE);
    let report = match super::build_file(&path, &options, now) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("{err}");
            return crate::cli::EXIT_FAILED;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
    } else {
        stdout.write_all(super::text::render(&report).as_bytes())
    };
    if let Err(err) = printed
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("cannot write the report: {err}");
        return crate::cli::EXIT_FAILED;
    }
    if let Some(file) = &args.html {
        let page = super::html::render(&report);
        if let Err(err) = write_page(file, &page) {
            eprintln!("cannot write {}: {err}", file.display());
            return crate::cli::EXIT_FAILED;
        }
        eprintln!(
            "wrote {} ({} KiB)",
            file.display(),
            page.len().div_ceil(1024)
        );
    }
    crate::cli::EXIT_OK
}

/// Through a temp file and a rename, so a browser reloading the page never reads half.
fn write_page(file: &Path, page: &str) -> std::io::Result<()> {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let temp = file.with_file_name(name);
    std::fs::write(&temp, page)?;
    std::fs::rename(&temp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// `max_cost_usd_per_day` per schedule id, a schedule's own value over the defaults'.
pub fn budgets(dir: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(dir.join(crate::config::SCHEDULES_FILE)).unwrap_or_default();
    budgets_of(&text)
}

fn budgets_of(text: &str) -> BTreeMap<String, f64> {
    const KEY: &str = "max_cost_usd_per_day";
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return BTreeMap::new();
    };
    let default = doc
        .pointer(&format!("/defaults/{KEY}"))
        .and_then(|v| v.as_f64());
    doc.get("schedules")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let id = s.get("id")?.as_str()?;
            let budget = s.get(KEY).and_then(|v| v.as_f64()).or(default)?;
            Some((id.to_owned(), budget))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_come_from_schedules_or_defaults() {
        let text = r#"{"version": 1, "defaults": {"max_cost_usd_per_day": 5},
            "schedules": [{"id": "a", "max_cost_usd_per_day": 2.5}, {"id": "b"}, {"cron": "x"}]}"#;
        let budgets = budgets_of(text);
        assert_eq!(budgets.get("a"), Some(&2.5));
        assert_eq!(budgets.get("b"), Some(&5.0));
        assert_eq!(budgets.len(), 2);
        assert!(budgets_of(r#"{"schedules": [{"id": "a"}]}"#).is_empty());
        assert!(budgets_of("not json").is_empty());
    }
}
