//! `timing::TimingLog::parse` on arbitrary bytes, then a round trip of what it read.
//!
//! Properties: no panic; every bad line has a line number inside the file; every row
//! read, appended to a fresh `TimingFile` and read back, comes back equal to what the
//! writer promises to store (times truncated to milliseconds, text cells made one-line,
//! the note sanitized) with no bad line.

#![no_main]

use chrono::{DateTime, SubsecRound, Utc};
use libfuzzer_sys::fuzz_target;
use loop_orchestrator::timing::{Row, TimingFile, TimingLog, sanitize_note};

/// The writer's rule for the text cells other than the note.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// What the file holds after `row` is appended.
fn as_stored(row: &Row) -> Row {
    Row {
        scheduled_at: row.scheduled_at.map(millis),
        started_at: millis(row.started_at),
        finished_at: millis(row.finished_at),
        schedule: one_line(&row.schedule),
        cycle: one_line(&row.cycle),
        mode: one_line(&row.mode),
        note: sanitize_note(&row.note),
        ..row.clone()
    }
}

fuzz_target!(|data: &[u8]| {
    let log = TimingLog::parse(data);
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    for bad in &log.bad_lines {
        assert!(
            bad.line >= 1 && bad.line <= lines,
            "bad line number outside the file ({lines} lines): {bad}"
        );
    }
    if log.rows.is_empty() {
        return;
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let file = TimingFile::new(dir.path().join("task_timing.tsv")).without_sync();
    file.append_all(&log.rows).expect("append rows");
    let back = file.read().expect("read back");
    assert!(
        back.bad_lines.is_empty(),
        "rows written by the writer read back as bad lines: {:?}",
        back.bad_lines
    );
    assert_eq!(back.rows.len(), log.rows.len(), "row count changed");
    for (read, original) in back.rows.iter().zip(&log.rows) {
        assert_eq!(*read, as_stored(original), "row did not round-trip");
    }
});
