//! `report`: runs, failures, durations, lateness and cost per schedule and mode, from
//! task_timing.tsv (SPEC §10); the CLI prints it as a table or JSON and can write the page.
//!
//! schedules.json is read loosely, for `max_cost_usd_per_day` only (on a schedule or in
//! `defaults`): a report needs nothing but the timing file, so a missing or invalid
//! schedules.json leaves the budgets out rather than failing.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::exit::Error;
use crate::instance::Instance;
use crate::report::{Options, Report, Since};

/// What to report on.
#[derive(Debug, Clone)]
pub struct Request {
    pub since: Since,
    pub schedule: Option<String>,
}

/// The report of an instance's timing file (a missing file is an empty report).
pub fn report(inst: &Instance, request: &Request, now: DateTime<Utc>) -> Result<Report, Error> {
    let options = Options {
        since: request.since.resolve(now),
        schedule: request.schedule.clone(),
        budgets: budgets(inst),
    };
    crate::report::build_file(&inst.timing(), &options, now).map_err(Error::failed)
}

/// Writes the report's page to `file` whole (a browser reloading it never reads half);
/// returns its size in bytes.
pub fn write_page(file: &Path, report: &Report) -> Result<usize, Error> {
    let page = crate::report::html::render(report);
    crate::fsutil::write_atomic_readable(file, page.as_bytes())
        .map_err(|err| Error::Failed(format!("cannot write {}: {err}", file.display())))?;
    Ok(page.len())
}

/// `max_cost_usd_per_day` per schedule id, a schedule's own value over the defaults'.
pub fn budgets(inst: &Instance) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(inst.schedules()).unwrap_or_default();
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
