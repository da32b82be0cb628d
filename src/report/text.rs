//! The terminal form of a [`Report`]: a block per schedule with a row per mode, and the
//! bad lines of the file. Every line fits 100 columns (long ids and modes are cut with
//! `…`), and text from the file is shown with its control characters escaped, so a row
//! cannot move the cursor or recolour the terminal.

use std::fmt::Write as _;

use super::{Lateness, ModeReport, Report, ScheduleReport};

/// The widest line [`render`] writes, in characters.
pub const WIDTH: usize = 100;
/// Bad lines listed; the JSON names more.
const BAD_LINES_SHOWN: usize = 10;

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!(
                "{}: {}, {}",
                printable(&report.file),
                count(report.rows as u64, "row"),
                count(report.bad_lines as u64, "bad line"),
            ),
            WIDTH
        )
    );
    let window = match &report.schedule_filter {
        Some(id) => format!(" of schedule {}", printable(id)),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!(
                "window: {} → {}: {}{window}",
                report.since.format("%Y-%m-%d %H:%M UTC"),
                report.now.format("%Y-%m-%d %H:%M UTC"),
                count(report.rows_in_window, "row"),
            ),
            WIDTH
        )
    );
    if report.schedules.is_empty() {
        let _ = match &report.schedule_filter {
            Some(id) => writeln!(
                out,
                "\nno rows of schedule {} in the window (check the id; an earlier --since \
                 reaches further back)",
                printable(id)
            ),
            None => writeln!(
                out,
                "\nno rows in the window (an earlier --since reaches further back)"
            ),
        };
    }
    for schedule in &report.schedules {
        out.push('\n');
        render_schedule(&mut out, schedule);
    }
    if report.bad_lines > 0 {
        let _ = writeln!(out, "\nbad lines (skipped):");
        for bad in report.bad_lines_named.iter().take(BAD_LINES_SHOWN) {
            let _ = writeln!(
                out,
                "{}",
                fit(
                    &format!("  line {}: {}", bad.line, printable(&bad.reason)),
                    WIDTH
                )
            );
        }
        let more = report.bad_lines.saturating_sub(BAD_LINES_SHOWN);
        if more > 0 {
            let _ = writeln!(
                out,
                "  … and {} more (--json names the first {})",
                thousands(more as u64),
                thousands(report.bad_lines_named.len() as u64)
            );
        }
    }
    out
}

fn render_schedule(out: &mut String, s: &ScheduleReport) {
    let lateness = match &s.lateness_ms {
        Some(Lateness { p50, p99, max, .. }) => format!(
            "lateness p50 {}, p99 {}, max {}",
            late(*p50),
            late(*p99),
            late(*max)
        ),
        None => "no scheduled fires".to_owned(),
    };
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!(
                "{}: {} ({}/day), {lateness}",
                fit(&printable(&s.schedule), 40),
                count(s.cycles, "cycle"),
                per_day(s.cycles_per_day)
            ),
            WIDTH
        )
    );
    let streak = match &s.longest_failure_streak {
        Some(streak) => format!(
            "longest failure streak {} ({} → {})",
            streak.cycles,
            streak.from.format("%m-%d %H:%M"),
            streak.to.format("%m-%d %H:%M")
        ),
        None => "no failed cycle".to_owned(),
    };
    let budget = match s.budget_usd_per_day {
        Some(budget) => format!(
            " of {} budget{}",
            money(budget),
            if s.cost_today_usd > budget {
                ", OVER"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{}",
        fit(
            &format!(
                "  {streak}; cost {}, today {}{budget}",
                money(s.cost_usd),
                money(s.cost_today_usd)
            ),
            WIDTH
        )
    );
    let _ = writeln!(
        out,
        "  {:<16}{:>9}{:>7}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}{:>11}",
        "mode", "runs", "ok %", "failed", "timeout", "blocked", "p50", "p95", "max", "cost"
    );
    for mode in &s.modes {
        let _ = writeln!(out, "{}", fit(&mode_line(mode), WIDTH));
    }
}

fn mode_line(m: &ModeReport) -> String {
    let d = |ms: u64| crate::duration::short(std::time::Duration::from_millis(ms));
    format!(
        "  {:<16}{:>9}{:>7}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}{:>11}",
        fit(&printable(&m.mode), 15),
        thousands(m.runs),
        format!("{:.1}", m.ok_percent),
        thousands(m.failed),
        thousands(m.timeout),
        thousands(m.blocked),
        d(m.duration_ms.p50),
        d(m.duration_ms.p95),
        d(m.duration_ms.max),
        money(m.cost_usd)
    )
}

/// `text` cut to `width` characters, its last one `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// `text` with control characters escaped (`\u{1b}`), for a terminal.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `1 row`, `1,234 rows`.
pub fn count(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars with the precision their size needs: `$0.0093`, `$12.34`, `$1,235`.
pub fn money(usd: f64) -> String {
    if usd == 0.0 {
        "$0".to_owned()
    } else if usd.abs() < 1.0 {
        format!("${usd:.4}")
    } else if usd.abs() < 1_000.0 {
        format!("${usd:.2}")
    } else {
        format!("${}", thousands(usd.round() as u64))
    }
}

/// Cycles per day: `0.5`, `12.3`, `1,234`.
pub fn per_day(n: f64) -> String {
    if n >= 100.0 {
        thousands(n.round() as u64)
    } else {
        format!("{n:.1}")
    }
}

/// A lateness in milliseconds: `3 ms`, `-12 ms`, `4.2s`, `12m 05s`.
pub fn late(ms: i64) -> String {
    if ms.abs() < 1_000 {
        format!("{ms} ms")
    } else {
        let sign = if ms < 0 { "-" } else { "" };
        format!(
            "{sign}{}",
            crate::duration::short(std::time::Duration::from_millis(ms.unsigned_abs()))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(money(0.0093), "$0.0093");
        assert_eq!(money(12.345), "$12.35");
        assert_eq!(money(1234.5), "$1,235");
        assert_eq!(late(3), "3 ms");
        assert_eq!(late(-12), "-12 ms");
        assert_eq!(late(4_200), "4.2s");
        assert_eq!(late(-725_000), "-12m 05s");
    }

    #[test]
    fn text_from_the_file_cannot_drive_the_terminal() {
        assert_eq!(printable("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(printable("ünï 日本"), "ünï 日本");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("日本語", 3), "日本語");
    }
}
