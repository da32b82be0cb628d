//! `config::parse_schedules` on arbitrary UTF-8 text, against a fixed set of modes.
//!
//! Properties: no panic; every problem points at line ≥ 1, column ≥ 1, and a line that
//! exists in the text. When the file is accepted, every schedule's cron evaluates (a few
//! fires from a DST-adjacent instant) without panicking and in increasing order.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use loop_orchestrator::config::parse_schedules;
use loop_orchestrator::mode::Mode;

const MODES: [(&str, &str); 3] = [
    (
        "implementation",
        "+++\ncommand = [\"claude\", \"-p\"]\nalternatives = [[\"codex\", \"exec\"]]\nprompt = \"stdin\"\nif_missing = \"skip\"\n+++\n# Implementation\n",
    ),
    (
        "validation",
        "+++\ncommand = [\"cargo\", \"check\"]\nprompt = \"none\"\ntimeout = \"20m\"\n+++\n# Validation\n",
    ),
    (
        "quality",
        "+++\ncommand = [\"cargo\", \"clippy\"]\nprompt = \"none\"\non_failure = \"continue\"\n+++\n",
    ),
];

fn modes() -> &'static BTreeMap<String, Mode> {
    static MODES_MAP: OnceLock<BTreeMap<String, Mode>> = OnceLock::new();
    MODES_MAP.get_or_init(|| {
        MODES
            .iter()
            .map(|(slug, text)| {
                let path = format!("modes/{slug}.md");
                let mode = Mode::parse(slug, Path::new(&path), text).expect("fixture mode parses");
                (slug.to_string(), mode)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Only read (cwd is checked with is_dir), never written.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let config = parse_schedules(dir, text, modes(), &mut problems);
    let lines = text.matches('\n').count() + 1;
    for problem in &problems {
        assert!(
            problem.line >= 1 && problem.column >= 1,
            "problem at line/column 0: {problem}"
        );
        assert!(
            problem.line <= lines,
            "problem past the end of the text ({lines} lines): {problem}"
        );
    }
    let Some(config) = config else {
        return;
    };
    if !problems.is_empty() {
        return;
    }
    // 2026-03-08T06:59:59Z is just before the US spring-forward gap.
    let start: DateTime<Utc> = DateTime::from_timestamp(1_772_953_199, 0).expect("valid instant");
    for schedule in &config.schedules {
        let mut previous = start;
        for _ in 0..3 {
            let Some(next) = schedule.cron.next_after(previous, &schedule.timezone) else {
                break;
            };
            assert!(
                next > previous,
                "cron {:?} in {}: next_after({previous}) = {next} is not later",
                schedule.cron.expr(),
                schedule.timezone
            );
            previous = next;
        }
    }
});
