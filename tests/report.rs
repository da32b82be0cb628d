//! `report`: the real binary over timing files written here, line by line, with the counts
//! they should give computed here too — including torn, foreign and garbage lines.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use common::{HEADER, Instance, text};
use serde_json::Value;

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// One good row as the writer lays it out.
struct Line {
    scheduled: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    duration_ms: u64,
    schedule: String,
    mode: &'static str,
    status: &'static str,
    cost: Option<f64>,
    note: String,
}

impl Line {
    fn text(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\tschedule\t{}\tc-{}\t{}\t1\t{}\t\t{}\t{}\n",
            self.scheduled.map(stamp).unwrap_or_default(),
            stamp(self.started),
            stamp(self.started + TimeDelta::milliseconds(self.duration_ms as i64)),
            self.duration_ms,
            self.schedule,
            self.started.timestamp(),
            self.mode,
            self.status,
            self.cost.map(|c| c.to_string()).unwrap_or_default(),
            self.note
        )
    }
}

const STATUSES: [&str; 7] = [
    "ok",
    "failed",
    "timeout",
    "blocked",
    "skipped",
    "interrupted",
    "escalated",
];

/// `count` cycles of two modes each for `schedule`, statuses cycling through a pattern
/// that holds a failure streak of `streak` cycles.
fn cycles(schedule: &str, start: DateTime<Utc>, count: usize, streak: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    for i in 0..count {
        let at = start + TimeDelta::minutes(10 * i as i64);
        let status = if (10..10 + streak).contains(&i) {
            ["failed", "timeout", "blocked"][i % 3]
        } else {
            // Every status, never two failures in a row: the streak above is the longest.
            [
                "ok",
                "failed",
                "ok",
                "timeout",
                "skipped",
                "ok",
                "blocked",
                "interrupted",
                "ok",
                "escalated",
            ][i % 10]
        };
        let late = (i % 5) as i64;
        for (k, mode) in ["implementation", "validation"].into_iter().enumerate() {
            lines.push(Line {
                scheduled: Some(at),
                started: at + TimeDelta::milliseconds(late + k as i64 * 1_000),
                duration_ms: 1_000 + i as u64,
                schedule: schedule.into(),
                mode,
                status: if k == 1 { status } else { "ok" },
                cost: (k == 0).then_some(0.25),
                note: format!("{mode} of cycle {i}"),
            });
        }
        lines.push(Line {
            scheduled: (i % 4 != 0).then_some(at),
            started: at + TimeDelta::milliseconds(late),
            duration_ms: 2_000 + i as u64,
            schedule: schedule.into(),
            mode: "cycle",
            status,
            cost: Some(0.25),
            note: format!("cycle {i}: {status}"),
        });
    }
    lines
}

/// Runs `report` and parses its JSON.
fn report_json(instance: &Instance, args: &[&str]) -> Value {
    let mut all = vec!["report", "--json"];
    all.extend_from_slice(args);
    let out = instance.run(&all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)))
}

fn mode<'a>(report: &'a Value, schedule: &str, mode: &str) -> &'a Value {
    report["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["schedule"] == schedule)
        .unwrap_or_else(|| panic!("no schedule {schedule}"))["modes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mode"] == mode)
        .unwrap_or_else(|| panic!("no mode {mode} in {schedule}"))
}

#[test]
fn json_totals_equal_an_independent_count_with_bad_lines_counted_and_named() {
    let instance = Instance::new("[]");
    let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap();
    let mut good = cycles("alpha", start, 40, 4);
    good.extend(cycles("beta", start + TimeDelta::seconds(30), 25, 2));
    // The bad lines, and where they go (after that many good rows).
    let bad: [(usize, &[u8]); 6] = [
        (5, b"2026-11-20T10:10:00.000Z\t2026-11-20T10:1"),
        (9, b"date,schedule,result"),
        (30, b"\xff\xfe garbage \xc3\x28"),
        (
            31,
            b"\t2026-11-20T08:00:00.000Z\t2026-11-20T08:00:01.000Z\t1000\tschedule\talpha\tc\tcycle\t1\tfine\t\t\tunknown status",
        ),
        (60, b"\t2026-11-20T08:00:00.000Z\tyesterday\t1\tschedule\tbeta\tc\tcycle\t1\tok\t\t\t"),
        (good.len(), HEADER.as_bytes()),
    ];
    let mut bytes = format!("{HEADER}\n").into_bytes();
    let mut line_no = 1;
    let mut bad_numbers = Vec::new();
    for (i, row) in good.iter().enumerate() {
        for (_, text) in bad.iter().filter(|(at, _)| *at == i) {
            bytes.extend_from_slice(text);
            bytes.push(b'\n');
            line_no += 1;
            bad_numbers.push(line_no);
        }
        if i == 20 {
            bytes.push(b'\n'); // a blank line: ignored, but it has a number
            line_no += 1;
        }
        bytes.extend_from_slice(row.text().as_bytes());
        line_no += 1;
    }
    for (_, text) in bad.iter().filter(|(at, _)| *at == good.len()) {
        bytes.extend_from_slice(text);
        bytes.push(b'\n');
        line_no += 1;
        bad_numbers.push(line_no);
    }
    // A writer that stopped mid-row at the very end.
    bytes.extend_from_slice(b"2026-11-21T10:20:00.000Z\t2026-11-21T10:2");
    bad_numbers.push(line_no + 1);
    std::fs::write(instance.path().join("task_timing.tsv"), &bytes).unwrap();

    let report = report_json(&instance, &["--since", "2026-01-01"]);
    assert_eq!(report["rows"], good.len());
    assert_eq!(report["rows_in_window"], good.len());
    assert_eq!(report["bad_lines"], bad_numbers.len());
    let named: Vec<u64> = report["bad_lines_named"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["line"].as_u64().unwrap())
        .collect();
    assert_eq!(
        named,
        bad_numbers.iter().map(|&n| n as u64).collect::<Vec<_>>()
    );
    let reasons: Vec<&str> = report["bad_lines_named"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("found 2"), "{reasons:?}");
    assert!(reasons[3].contains("fine"), "{reasons:?}");
    assert!(reasons[4].contains("finished_at"), "{reasons:?}");
    assert!(
        reasons.last().unwrap().contains("incomplete"),
        "{reasons:?}"
    );

    // Per schedule and mode: runs, every status, cost, from the rows written above.
    let mut expected: BTreeMap<(&str, &str), (u64, [u64; 7], f64)> = BTreeMap::new();
    for row in &good {
        let entry = expected
            .entry((row.schedule.as_str(), row.mode))
            .or_default();
        entry.0 += 1;
        entry.1[STATUSES.iter().position(|s| *s == row.status).unwrap()] += 1;
        entry.2 += row.cost.unwrap_or(0.0);
    }
    let mut runs_total = 0;
    for ((schedule, name), (runs, statuses, cost)) in &expected {
        let m = mode(&report, schedule, name);
        assert_eq!(m["runs"], *runs, "{schedule}/{name}");
        for (status, n) in STATUSES.iter().zip(statuses) {
            assert_eq!(m[*status], *n, "{schedule}/{name} {status}");
        }
        assert!((m["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
        runs_total += runs;
    }
    assert_eq!(runs_total, good.len() as u64);

    for (schedule, cycles, streak) in [("alpha", 40, 4), ("beta", 25, 2)] {
        let s = report["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["schedule"] == schedule)
            .unwrap();
        assert_eq!(s["cycles"], cycles);
        // Mode rows only: the cycle row repeats their cost.
        let cost: f64 = good
            .iter()
            .filter(|r| r.schedule == schedule && r.mode != "cycle")
            .filter_map(|r| r.cost)
            .sum();
        assert!((s["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
        let late: Vec<i64> = good
            .iter()
            .filter(|r| r.schedule == schedule && r.mode == "cycle")
            .filter_map(|r| r.scheduled.map(|at| (r.started - at).num_milliseconds()))
            .collect();
        assert_eq!(s["lateness_ms"]["samples"], late.len());
        assert_eq!(s["lateness_ms"]["max"], *late.iter().max().unwrap());
        // The pattern's own streak is the longest: the rest never has two failures in a row.
        assert_eq!(s["longest_failure_streak"]["cycles"], streak, "{schedule}");
    }

    // The window and the schedule filter.
    let later = report_json(
        &instance,
        &["--since", "2026-11-20T12:00:00Z", "--schedule", "alpha"],
    );
    let cut: DateTime<Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
    let in_window = good
        .iter()
        .filter(|r| r.schedule == "alpha" && r.started >= cut)
        .count();
    assert!(in_window > 0 && in_window < 120);
    assert_eq!(later["rows_in_window"], in_window);
    assert_eq!(later["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(
        later["bad_lines"],
        bad_numbers.len(),
        "bad lines: the whole file"
    );
}

/// Every tag of `page` (what sits between `<` and `>`; escaped text holds no `<`).
fn tags(page: &str) -> Vec<&str> {
    page.split('<')
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
        .collect()
}

fn assert_self_contained(page: &str) {
    for tag in tags(page) {
        let name = tag.split_whitespace().next().unwrap_or("").to_lowercase();
        assert_ne!(name, "script", "a script tag");
        assert!(
            ![
                "link", "img", "iframe", "object", "embed", "image", "use", "a"
            ]
            .contains(&name.as_str()),
            "a tag that can fetch or link: <{tag}>"
        );
        for attribute in tag.split_whitespace().skip(1) {
            let name = attribute.split('=').next().unwrap_or("").to_lowercase();
            assert!(
                !["src", "href", "xlink:href", "action", "srcset", "style"]
                    .contains(&name.as_str())
                    || (name == "style" && !attribute.contains("url")),
                "attribute {attribute:?} in <{tag}>"
            );
            assert!(!name.starts_with("on"), "an event handler in <{tag}>");
        }
    }
    assert!(!page.contains("url("), "a CSS url()");
    assert!(!page.contains("@import"));
}

const HOSTILE: [&str; 4] = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "quotes \"double\" and 'single' & </title></svg><b>",
    "ünïcödé 日本語 🦀 שלום",
];

#[test]
fn html_is_self_contained_and_shows_markup_in_notes_and_names_as_text() {
    let instance = Instance::new("[]");
    let start: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap();
    let mut rows = String::new();
    // One schedule with a few cycles (drawn one by one), one with thousands (drawn per
    // column, notes in the hover titles of groups), both carrying the hostile notes.
    for (schedule, count) in [("<b>few</b>", 8usize), ("many\"'&", 6_000)] {
        for i in 0..count {
            let at = start + TimeDelta::seconds(60 * i as i64);
            let note = format!("{} #{i}", HOSTILE[i % HOSTILE.len()]);
            let status = if i % 3 == 0 { "failed" } else { "ok" };
            for (mode, status) in [("<i>mode</i>", status), ("cycle", status)] {
                rows.push_str(
                    &Line {
                        scheduled: Some(at),
                        started: at,
                        duration_ms: 500,
                        schedule: schedule.into(),
                        mode,
                        status,
                        cost: Some(0.5),
                        note: note.clone(),
                    }
                    .text(),
                );
            }
        }
    }
    rows.push_str("<script>alert('bad line')</script>\n");
    instance.write("task_timing.tsv", &format!("{HEADER}\n{rows}"));
    let page_path = instance.path().join("page.html");
    let out = instance.run(&[
        "report",
        "--since",
        "2026-01-01",
        "--html",
        page_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert!(page.len() < 2_000_000, "{} bytes", page.len());
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_self_contained(&page);
    for (raw, escaped) in [
        (
            "<script>alert(1)</script>",
            "&lt;script&gt;alert(1)&lt;/script&gt;",
        ),
        (
            "<img src=x onerror=alert(1)>",
            "&lt;img src=x onerror=alert(1)&gt;",
        ),
        (
            "\"double\" and 'single' &",
            "&quot;double&quot; and &#39;single&#39; &amp;",
        ),
        ("<b>few</b>", "&lt;b&gt;few&lt;/b&gt;"),
        ("many\"'&", "many&quot;&#39;&amp;"),
        ("<i>mode</i>", "&lt;i&gt;mode&lt;/i&gt;"),
    ] {
        assert!(!page.contains(raw), "{raw:?} unescaped");
        assert!(page.contains(escaped), "{escaped:?} missing");
    }
    assert!(
        page.contains("ünïcödé 日本語 🦀 שלום"),
        "unicode kept as is"
    );
    // The few cycles are hoverable one by one; the many through groups with notes.
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt; #1"));
    assert!(page.contains("latest failed at"));
    // The bad line is named, escaped.
    assert!(page.contains("line 12018: expected 13 tab-separated cells, found 1"));
    assert!(!page.contains("<script>alert('bad line')"));
}

#[test]
fn unknown_since_is_exit_2_saying_what_is_accepted() {
    let instance = Instance::new("[]");
    for bad in ["yesterday", "7", "2026-13-40", "last week"] {
        let out = instance.run(&["report", "--since", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for accepted in ["7d", "36h", "2026-11-20", "RFC 3339"] {
            assert!(stderr.contains(accepted), "{bad}: {stderr}");
        }
        assert!(stderr.contains(bad), "names the value: {stderr}");
    }
    for good in ["7d", "36h", "90m", "2026-11-20", "2026-11-20T08:00:00Z"] {
        let out = instance.run(&["report", "--since", good]);
        assert_eq!(out.status.code(), Some(0), "{good}: {}", text(&out));
    }
}

#[test]
fn table_fits_100_columns_and_names_bad_lines() {
    let instance = Instance::new("[]");
    let now = Utc::now();
    let long = "a-schedule-whose-id-goes-on-and-on-and-on-well-past-any-sensible-width-of-a-table";
    let mut rows = String::new();
    for line in cycles(long, now - TimeDelta::hours(20), 50, 3) {
        rows.push_str(&line.text());
    }
    rows.push_str(
        &Line {
            scheduled: None,
            started: now - TimeDelta::hours(1),
            duration_ms: 123_456_789,
            schedule: "s".into(),
            mode: "a-mode-with-a-long-slug-name",
            status: "ok",
            cost: Some(12_345.678),
            note: String::new(),
        }
        .text(),
    );
    rows.push_str("torn\tline\n\u{1b}[31mred\n");
    instance.write("task_timing.tsv", &format!("{HEADER}\n{rows}"));
    instance.write(
        "schedules.json",
        &format!(r#"{{"schedules": [{{"id": "{long}", "max_cost_usd_per_day": 10.5}}]}}"#),
    );
    let out = instance.run(&["report"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    for line in table.lines() {
        assert!(
            line.chars().count() <= 100,
            "{} columns: {line}",
            line.chars().count()
        );
    }
    assert!(!table.contains('\u{1b}'), "no escape reaches the terminal");
    assert!(
        table.contains("line 153: expected 13 tab-separated cells, found 2"),
        "{table}"
    );
    assert!(table.contains("line 154: "), "{table}");
    assert!(table.contains("of $10.50 budget"), "{table}");
    assert!(table.contains("a-mode-with-a-…"), "{table}");

    let report = report_json(&instance, &[]);
    let s = &report["schedules"][0];
    assert_eq!(s["schedule"], long);
    assert_eq!(s["budget_usd_per_day"], 10.5);
    assert_eq!(report["schedules"][1]["budget_usd_per_day"], Value::Null);
}

#[test]
fn a_missing_timing_file_is_an_empty_report() {
    let instance = Instance::new("[]");
    let out = instance.run(&["report"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 rows, 0 bad lines"), "{stdout}");
    assert!(!instance.path().join("task_timing.tsv").exists());
}
