//! The page form of a [`Report`]: one self-contained HTML file (inline CSS and SVG; no
//! script, nothing fetched, no link outside the page) with a timeline of cycles, the
//! durations per mode, a lateness histogram, cost per day and the tables of the text form.
//!
//! # Rules
//! - Every piece of text from the file (schedule ids, modes, notes, bad-line reasons) goes
//!   through [`esc`]: a note carrying `<script>` or `onerror=` is shown, never run.
//! - The page stays readable and small whatever the number of rows: a lane of the
//!   timeline with more cycles than it has room for is drawn per pixel column, each column
//!   split by the share of each status (a failure always gets a few pixels, so a single
//!   one stays visible), and hovered per group of columns; the days of the cost chart are
//!   grouped when there are more than it can show. Notes in hover titles are cut to
//!   [`NOTE_SHOWN`] characters.
//! - Sizes are in SVG user units; each SVG scales to the page's width.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::text::{count, late, money, per_day, thousands};
use super::{CycleMark, Report};
use crate::timing::Status;

/// Characters of a note shown in a hover title.
const NOTE_SHOWN: usize = 200;
/// The width of every chart, in SVG units.
const CHART_W: f64 = 1200.0;
/// Where the plots of the timeline and the duration chart start (room for labels).
const LABEL_W: f64 = 250.0;

const CSS: &str = "
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 20px 0 6px; overflow-wrap: anywhere; }
p.meta, p.note { color: var(--muted); margin: 2px 0; }
.warn { color: #b42318; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0 8px; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
td small { color: var(--muted); font-size: 11px; }
th { background: var(--bg); font-weight: 600; }
th:first-child, td:first-child { text-align: left; max-width: 300px; overflow: hidden; text-overflow: ellipsis; }
tr.cycle td { font-weight: 600; background: #fbfcfd; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0; color: var(--muted); font-size: 13px; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
svg { display: block; width: 100%; height: auto; font: 12px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
svg text { fill: var(--ink); }
svg .muted { fill: var(--muted); }
svg .grid { stroke: #e6eaef; stroke-width: 1; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
.meter { display: inline-block; width: 56px; height: 8px; background: var(--bg); border: 1px solid var(--line); vertical-align: middle; }
.meter b { display: block; height: 100%; background: #4e79a7; }
.meter.over b { background: #b42318; }
ol.bad { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--muted); padding-left: 0; list-style: none; }
ol.bad li { overflow-wrap: anywhere; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
";

/// Statuses from the bottom of a timeline lane to its top, with their colours.
const STATUS_ORDER: [(Status, &str); 7] = [
    (Status::Ok, "#59a14f"),
    (Status::Skipped, "#bab0ac"),
    (Status::Interrupted, "#edc948"),
    (Status::Escalated, "#5c1a1b"),
    (Status::Blocked, "#b07aa1"),
    (Status::Timeout, "#f28e2b"),
    (Status::Failed, "#e15759"),
];

/// Colours of schedules in the cost chart: none of them a status colour.
const SCHEDULE_COLOURS: [&str; 10] = [
    "#4e79a7", "#76b7b2", "#9c755f", "#ff9da7", "#f1ce63", "#a0cbe8", "#86bcb6", "#d4a6c8",
    "#79706e", "#8cd17d",
];

fn status_colour(status: Status) -> &'static str {
    STATUS_ORDER
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("#000", |(_, c)| c)
}

fn slot(status: Status) -> usize {
    STATUS_ORDER
        .iter()
        .position(|(s, _)| *s == status)
        .unwrap_or(0)
}

fn schedule_colour(i: usize) -> &'static str {
    SCHEDULE_COLOURS[i % SCHEDULE_COLOURS.len()]
}

/// `text` safe in HTML text and in attribute values (quoted with either quote).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are not allowed in HTML text.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `chars` characters with `…`.
fn cut(text: &str, chars: usize) -> String {
    super::text::fit(text, chars)
}

fn duration(ms: u64) -> String {
    crate::duration::short(std::time::Duration::from_millis(ms))
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let title = format!("loop-orchestrator report: {}", report.file);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    header(&mut out, report);
    summary(&mut out, report);
    timeline(&mut out, report);
    durations(&mut out, report);
    lateness(&mut out, report);
    cost(&mut out, report);
    mode_tables(&mut out, report);
    bad_lines(&mut out, report);
    let _ = write!(
        out,
        "<footer>Written by loop-orchestrator {} at {}. Times are UTC. Self-contained: \
         no script, nothing fetched.</footer>\n</main>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        report.now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    out
}

fn header(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "<h1>Cycles of {}</h1>\n<p class=\"meta\">window {} → {} UTC{} · {} in the \
         window, {} in the file</p>\n",
        esc(&report.file),
        report.since.format("%Y-%m-%d %H:%M"),
        report.now.format("%Y-%m-%d %H:%M"),
        report
            .schedule_filter
            .as_ref()
            .map(|id| format!(" · schedule {}", esc(id)))
            .unwrap_or_default(),
        count(report.rows_in_window, "row"),
        thousands(report.rows as u64),
    );
    if report.bad_lines > 0 {
        let _ = writeln!(
            out,
            "<p class=\"warn\">{} skipped (listed at the end).</p>",
            count(report.bad_lines as u64, "bad line"),
        );
    }
}

fn summary(out: &mut String, report: &Report) {
    out.push_str("<h2>Schedules</h2>\n");
    if report.schedules.is_empty() {
        out.push_str("<p class=\"note\">No rows in the window.</p>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table>\n<tr><th>schedule</th><th>cycles</th><th>per day</th>\
         <th>cycles ok</th><th>lateness p50</th><th>p99</th><th>longest failure streak</th>\
         <th>cost</th><th>today</th><th>daily budget</th></tr>\n",
    );
    for s in &report.schedules {
        let cycle = s.modes.iter().find(|m| m.mode == crate::timing::CYCLE_MODE);
        let (p50, p99) = s
            .lateness_ms
            .map_or(("–".into(), "–".into()), |l| (late(l.p50), late(l.p99)));
        let streak = s.longest_failure_streak.map_or("–".into(), |st| {
            let to = if st.to.date_naive() == st.from.date_naive() {
                st.to.format("%H:%M")
            } else {
                st.to.format("%m-%d %H:%M")
            };
            format!(
                "{} <small>{} → {to}</small>",
                st.cycles,
                st.from.format("%m-%d %H:%M"),
            )
        });
        let budget = match s.budget_usd_per_day {
            Some(budget) if budget > 0.0 => {
                let share = s.cost_today_usd / budget * 100.0;
                format!(
                    "<span class=\"meter{}\" title=\"{share:.0}% of the daily budget spent today\">\
                     <b style=\"width:{:.0}%\"></b></span> {}",
                    if share > 100.0 { " over" } else { "" },
                    share.min(100.0),
                    money(budget),
                )
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "<tr><td title=\"{id}\">{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{budget}</td></tr>",
            thousands(s.cycles),
            per_day(s.cycles_per_day),
            cycle.map_or("–".into(), |c| format!("{:.1}%", c.ok_percent)),
            esc(&p50),
            esc(&p99),
            streak,
            money(s.cost_usd),
            money(s.cost_today_usd),
            id = esc(&s.schedule),
        );
    }
    out.push_str("</table></div>\n");
}

fn legend(out: &mut String, counts: &[u64; 7]) {
    out.push_str("<div class=\"legend\">");
    for (i, (status, colour)) in STATUS_ORDER.iter().enumerate() {
        let _ = write!(
            out,
            "<span><i style=\"background:{colour}\"></i>{status} {}</span>",
            thousands(counts[i])
        );
    }
    out.push_str("</div>\n");
}

/// Ticks for a time axis over `[t0, t1]` ms: (instant, label), at most about ten.
fn time_ticks(t0: i64, t1: i64) -> Vec<(i64, String)> {
    const MIN: i64 = 60_000;
    const STEPS: [i64; 16] = [
        MIN,
        5 * MIN,
        15 * MIN,
        30 * MIN,
        60 * MIN,
        3 * 60 * MIN,
        6 * 60 * MIN,
        12 * 60 * MIN,
        24 * 60 * MIN,
        2 * 24 * 60 * MIN,
        7 * 24 * 60 * MIN,
        14 * 24 * 60 * MIN,
        30 * 24 * 60 * MIN,
        91 * 24 * 60 * MIN,
        365 * 24 * 60 * MIN,
        3650 * 24 * 60 * MIN,
    ];
    let span = (t1 - t0).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 9)
        .unwrap_or(STEPS[STEPS.len() - 1]);
    let format = if step >= 24 * 60 * MIN {
        "%Y-%m-%d"
    } else if span > 24 * 60 * MIN {
        "%m-%d %H:%M"
    } else {
        "%H:%M"
    };
    let mut ticks = Vec::new();
    let mut t = t0.div_euclid(step) * step;
    while t <= t1 {
        if t >= t0 {
            ticks.push((t, time(t).format(format).to_string()));
        }
        t += step;
    }
    ticks
}

/// One lane drawn per pixel column: counts per status and, per hover group, the latest
/// failing cycle.
struct Columns {
    counts: Vec<[u32; 7]>,
    groups: Vec<Group>,
}

#[derive(Clone, Copy, Default)]
struct Group {
    cycles: u32,
    counts: [u32; 7],
    /// (started_at, status, note) of the latest cycle that was not ok or skipped.
    worst: Option<(i64, Status, u32)>,
}

fn timeline(out: &mut String, report: &Report) {
    /// Plot columns are this many units wide in a drawn-per-column lane.
    const COLUMN: f64 = 2.0;
    /// Columns per hover group.
    const GROUP: usize = 4;
    const LANE_H: f64 = 22.0;
    const LANE_GAP: f64 = 8.0;
    const TOP: f64 = 8.0;
    let cycles = &report.timeline.cycles;
    out.push_str("<h2>Cycles</h2>\n");
    let mut counts = [0u64; 7];
    for c in cycles {
        counts[slot(c.status)] += 1;
    }
    if cycles.is_empty() {
        out.push_str("<p class=\"note\">No cycle rows in the window.</p>\n");
        return;
    }
    let (t0, t1) = timeline_range(report);
    let plot_w = CHART_W - LABEL_W - 10.0;
    let x = |t: i64| LABEL_W + ((t - t0) as f64 / (t1 - t0) as f64 * plot_w).clamp(0.0, plot_w);
    let lanes = report.schedules.len();
    let mut per_lane = vec![0usize; lanes];
    for c in cycles {
        per_lane[c.schedule as usize] += 1;
    }
    let columns = (plot_w / COLUMN) as usize;
    // A lane with more cycles than a quarter of its columns is drawn per column.
    let dense: Vec<bool> = per_lane.iter().map(|&n| n > columns / 4).collect();
    let _ = writeln!(
        out,
        "<p class=\"note\">One lane per schedule, {} → {} UTC. {}Hover for the notes.</p>",
        time(t0).format("%Y-%m-%d %H:%M"),
        time(t1).format("%Y-%m-%d %H:%M"),
        if dense.iter().any(|d| *d) {
            "Where cycles are too many to draw one by one, each pixel column shows the share \
             of each status among the cycles that started in it; a failure always shows. "
        } else {
            "Each mark is one cycle, as wide as it ran. "
        }
    );
    legend(out, &counts);
    let height = TOP + lanes as f64 * (LANE_H + LANE_GAP) + 24.0;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"timeline of cycles\">"
    );
    let ticks = time_ticks(t0, t1);
    for (t, label) in &ticks {
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\"/>\
             <text class=\"muted\" x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            x(*t),
            height - 20.0,
            height - 6.0,
            esc(label)
        );
    }
    let mut bucketed: Vec<Option<Columns>> = dense
        .iter()
        .map(|&d| {
            d.then(|| Columns {
                counts: vec![[0; 7]; columns],
                groups: vec![Group::default(); columns.div_ceil(GROUP)],
            })
        })
        .collect();
    let mut marks = String::new();
    for c in cycles {
        let lane = c.schedule as usize;
        let top = TOP + lane as f64 * (LANE_H + LANE_GAP);
        match &mut bucketed[lane] {
            Some(cols) => {
                let column = (((c.started_at_ms - t0) as f64 / (t1 - t0) as f64 * columns as f64)
                    as usize)
                    .min(columns - 1);
                cols.counts[column][slot(c.status)] += 1;
                let group = &mut cols.groups[column / GROUP];
                group.cycles += 1;
                group.counts[slot(c.status)] += 1;
                if !matches!(c.status, Status::Ok | Status::Skipped)
                    && group.worst.is_none_or(|(at, _, _)| at <= c.started_at_ms)
                {
                    group.worst = Some((c.started_at_ms, c.status, c.note));
                }
            }
            None => mark(
                &mut marks,
                report,
                c,
                x(c.started_at_ms),
                x(c.started_at_ms + c.duration_ms as i64),
                top,
                LANE_H,
            ),
        }
    }
    for (lane, s) in report.schedules.iter().enumerate() {
        let top = TOP + lane as f64 * (LANE_H + LANE_GAP);
        let _ = writeln!(
            out,
            "<rect x=\"{LABEL_W}\" y=\"{top}\" width=\"{plot_w}\" height=\"{LANE_H}\" fill=\"#f6f8fa\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\"><title>{}</title>{}</text>\
             <text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{}</text>",
            LABEL_W - 8.0,
            top + 10.0,
            esc(&s.schedule),
            esc(&cut(&s.schedule, 30)),
            LABEL_W - 8.0,
            top + 21.0,
            count(per_lane[lane] as u64, "cycle")
        );
        if let Some(cols) = &bucketed[lane] {
            columns_svg(out, report, cols, top, LANE_H, COLUMN, GROUP, t0, t1);
        }
    }
    out.push_str(&marks);
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LABEL_W}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\"/>\n</svg>",
        LABEL_W + plot_w,
        height - 20.0
    );
}

/// The instants the timeline spans: the window's data, at least ten minutes.
fn timeline_range(report: &Report) -> (i64, i64) {
    let since = report.since.timestamp_millis();
    let first = report
        .timeline
        .cycles
        .iter()
        .map(|c| c.started_at_ms)
        .min()
        .unwrap_or(since);
    let last = report
        .timeline
        .cycles
        .iter()
        .map(|c| c.started_at_ms.saturating_add(c.duration_ms as i64))
        .max()
        .unwrap_or(first);
    let (mut t0, mut t1) = (first.max(since), last);
    const MIN_SPAN: i64 = 10 * 60_000;
    if t1 - t0 < MIN_SPAN {
        let pad = (MIN_SPAN - (t1 - t0)) / 2;
        t0 -= pad;
        t1 = t0 + MIN_SPAN;
    }
    (t0, t1)
}

/// One cycle as a mark of its own.
fn mark(out: &mut String, report: &Report, c: &CycleMark, x0: f64, x1: f64, top: f64, h: f64) {
    let note = report
        .timeline
        .notes
        .get(c.note as usize)
        .map_or("", |n| n.as_ref());
    let _ = writeln!(
        out,
        "<rect x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{h}\" fill=\"{}\" \
         stroke=\"#fff\" stroke-width=\"0.5\"><title>{} · {} · {}{}{}</title></rect>",
        (x1 - x0).max(3.0),
        status_colour(c.status),
        time(c.started_at_ms).format("%Y-%m-%d %H:%M:%S UTC"),
        c.status,
        duration(c.duration_ms),
        if note.is_empty() { "" } else { "\n" },
        esc(&cut(note, NOTE_SHOWN))
    );
}

/// Heights of a column's statuses (in [`STATUS_ORDER`]) that sum to `h`: shares of the
/// cycles, but at least one unit for each status other than ok and skipped that occurs
/// (one failure among hundreds of cycles still shows as a line; a failure in every column
/// does not paint the lane red beyond its share).
fn heights(counts: &[u32; 7], h: f64) -> [f64; 7] {
    let total: u32 = counts.iter().sum();
    let mut out = [0.0; 7];
    if total == 0 {
        return out;
    }
    for (i, &n) in counts.iter().enumerate() {
        out[i] = (f64::from(n) / f64::from(total) * h).round();
        if n > 0 && i >= 2 {
            out[i] = out[i].max(1.0);
        }
    }
    // Whatever exceeds the lane is taken from ok, then skipped, then the rest in turn.
    let mut excess = out.iter().sum::<f64>() - h;
    for value in out.iter_mut() {
        if excess <= 0.0 {
            break;
        }
        let take = value.min(excess);
        *value -= take;
        excess -= take;
    }
    if excess < 0.0 {
        // Rounding left a gap: the largest share takes it.
        let (i, _) = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("seven slots");
        out[i] -= excess;
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn columns_svg(
    out: &mut String,
    report: &Report,
    cols: &Columns,
    top: f64,
    h: f64,
    column_w: f64,
    group: usize,
    t0: i64,
    t1: i64,
) {
    // One path per status; runs of columns with the same segment become one rectangle.
    let mut paths: [String; 7] = Default::default();
    let mut runs: [Option<(usize, usize, f64, f64)>; 7] = [None; 7];
    let flush = |paths: &mut [String; 7], i: usize, run: (usize, usize, f64, f64)| {
        let (from, to, y, height) = run;
        let _ = write!(
            paths[i],
            "M{:.0} {y:.0}h{:.0}v{height:.0}h-{:.0}z",
            LABEL_W + from as f64 * column_w,
            (to - from) as f64 * column_w,
            (to - from) as f64 * column_w
        );
    };
    for (column, counts) in cols.counts.iter().enumerate() {
        let hs = heights(counts, h);
        let mut y = top + h;
        for i in 0..7 {
            let segment = (hs[i] > 0.0).then(|| {
                y -= hs[i];
                (y, hs[i])
            });
            match (runs[i], segment) {
                (Some((from, to, ry, rh)), Some((sy, sh)))
                    if to == column && ry == sy && rh == sh =>
                {
                    runs[i] = Some((from, column + 1, ry, rh));
                }
                (run, segment) => {
                    if let Some(run) = run {
                        flush(&mut paths, i, run);
                    }
                    runs[i] = segment.map(|(sy, sh)| (column, column + 1, sy, sh));
                }
            }
        }
    }
    for (i, run) in runs.into_iter().enumerate() {
        if let Some(run) = run {
            flush(&mut paths, i, run);
        }
    }
    for (i, path) in paths.iter().enumerate() {
        if !path.is_empty() {
            let _ = writeln!(out, "<path fill=\"{}\" d=\"{path}\"/>", STATUS_ORDER[i].1);
        }
    }
    // Hover: a transparent rectangle per group of columns with cycles.
    let span = (t1 - t0) as f64;
    let columns = cols.counts.len() as f64;
    for (g, info) in cols.groups.iter().enumerate() {
        if info.cycles == 0 {
            continue;
        }
        let first = g * group;
        let from = t0 + (first as f64 / columns * span) as i64;
        let to = t0 + (((first + group) as f64 / columns).min(1.0) * span) as i64;
        let mut title = format!(
            "{} → {} UTC: {}",
            time(from).format("%m-%d %H:%M"),
            time(to).format("%m-%d %H:%M"),
            count(u64::from(info.cycles), "cycle"),
        );
        for (i, (status, _)) in STATUS_ORDER.iter().enumerate() {
            if info.counts[i] > 0 {
                let _ = write!(title, ", {} {status}", thousands(u64::from(info.counts[i])));
            }
        }
        if let Some((at, status, note)) = info.worst {
            let note = report
                .timeline
                .notes
                .get(note as usize)
                .map_or("", |n| n.as_ref());
            let _ = write!(
                title,
                "\nlatest {status} at {}: {}",
                time(at).format("%m-%d %H:%M:%S"),
                cut(note, NOTE_SHOWN)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{:.0}\" y=\"{top}\" width=\"{:.0}\" height=\"{h}\" fill=\"transparent\">\
             <title>{}</title></rect>",
            LABEL_W + first as f64 * column_w,
            (group as f64 * column_w).min((columns - first as f64) * column_w),
            esc(&title)
        );
    }
}

/// Log-scale ticks (1, 10, 100 ms, 1 s, 10 s, 1 min, 10 min, 1 h, 10 h) within `[lo, hi]`.
const DURATION_TICKS: [(f64, &str); 10] = [
    (1.0, "1 ms"),
    (10.0, "10 ms"),
    (100.0, "100 ms"),
    (1_000.0, "1 s"),
    (10_000.0, "10 s"),
    (60_000.0, "1 min"),
    (600_000.0, "10 min"),
    (3_600_000.0, "1 h"),
    (36_000_000.0, "10 h"),
    (360_000_000.0, "100 h"),
];

fn durations(out: &mut String, report: &Report) {
    const ROW_H: f64 = 20.0;
    const STATS_W: f64 = 300.0;
    out.push_str("<h2>Durations per mode</h2>\n");
    let rows: Vec<(usize, &super::ModeReport)> = report
        .schedules
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.modes.iter().map(move |m| (i, m)))
        .filter(|(_, m)| m.runs > 0)
        .collect();
    if rows.is_empty() {
        out.push_str("<p class=\"note\">No rows in the window.</p>\n");
        return;
    }
    out.push_str(
        "<p class=\"note\">Per schedule and mode (the <b>cycle</b> row is the whole cycle), \
         on a log scale: the bar spans p50 to p95, the line runs on to the longest run (dot).\
         </p>\n",
    );
    let lo = rows
        .iter()
        .map(|(_, m)| m.duration_ms.p50.max(1) as f64)
        .fold(f64::INFINITY, f64::min);
    let hi = rows
        .iter()
        .map(|(_, m)| m.duration_ms.max.max(1) as f64)
        .fold(1.0, f64::max);
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    let plot_w = CHART_W - LABEL_W - STATS_W - 10.0;
    let x = |ms: u64| {
        let v = (ms.max(1) as f64).clamp(lo, hi);
        LABEL_W + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_w
    };
    let height = 8.0 + rows.len() as f64 * ROW_H + 24.0;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"durations per mode\">"
    );
    for (ms, label) in DURATION_TICKS {
        if ms < lo || ms > hi {
            continue;
        }
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"4\" y2=\"{1:.1}\"/>\
             <text class=\"muted\" x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>",
            x(ms as u64),
            height - 20.0,
            height - 6.0
        );
    }
    let mut previous = usize::MAX;
    for (row, (schedule, m)) in rows.iter().enumerate() {
        let y = 8.0 + row as f64 * ROW_H;
        let mid = y + ROW_H / 2.0;
        let colour = schedule_colour(*schedule);
        let name = &report.schedules[*schedule].schedule;
        let label = if *schedule == previous {
            esc(&cut(&m.mode, 30))
        } else {
            format!("{} · {}", esc(&cut(name, 22)), esc(&cut(&m.mode, 16)))
        };
        previous = *schedule;
        let d = m.duration_ms;
        let (x50, x95, xmax) = (x(d.p50), x(d.p95), x(d.max));
        let stats = format!(
            "p50 {} · p95 {} · max {}",
            duration(d.p50),
            duration(d.p95),
            duration(d.max)
        );
        let _ = writeln!(
            out,
            "<g><title>{} / {}: {} runs, {stats}</title>\
             <text x=\"{label_x:.1}\" y=\"{text_y:.1}\" text-anchor=\"end\"{weight}>{label}</text>\
             <line x1=\"{x50:.1}\" x2=\"{xmax:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\" stroke=\"{colour}\" stroke-width=\"1.5\"/>\
             <rect x=\"{x50:.1}\" y=\"{bar_y:.1}\" width=\"{bar_w:.1}\" height=\"10\" fill=\"{colour}\" opacity=\"0.55\"/>\
             <line x1=\"{x50:.1}\" x2=\"{x50:.1}\" y1=\"{tick_y0:.1}\" y2=\"{tick_y1:.1}\" stroke=\"#1f2328\" stroke-width=\"2\"/>\
             <circle cx=\"{xmax:.1}\" cy=\"{mid:.1}\" r=\"3\" fill=\"{colour}\"/>\
             <text class=\"muted\" x=\"{stats_x:.1}\" y=\"{text_y:.1}\">{stats}</text></g>",
            esc(name),
            esc(&m.mode),
            thousands(m.runs),
            label_x = LABEL_W - 8.0,
            text_y = mid + 4.0,
            weight = if m.mode == crate::timing::CYCLE_MODE {
                " font-weight=\"600\""
            } else {
                ""
            },
            bar_y = mid - 5.0,
            bar_w = (x95 - x50).max(1.0),
            tick_y0 = mid - 7.0,
            tick_y1 = mid + 7.0,
            stats_x = CHART_W - STATS_W + 10.0,
        );
    }
    out.push_str("</svg>\n");
}

fn lateness(out: &mut String, report: &Report) {
    const PLOT_H: f64 = 180.0;
    const LEFT: f64 = 60.0;
    out.push_str("<h2>Fire lateness</h2>\n");
    let bins = &report.lateness_histogram;
    let total: u64 = bins.iter().map(|b| b.count).sum();
    if total == 0 {
        out.push_str("<p class=\"note\">No scheduled fires in the window.</p>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">started_at − scheduled_at of {} with a scheduled_at, all schedules; \
         counts on a log scale. Hover a bar for its schedules.</p>",
        count(total, "cycle row")
    );
    let max = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let top_decade = (max as f64).log10().ceil().max(1.0);
    let y = |n: u64| {
        if n == 0 {
            0.0
        } else {
            // log10(n + 1) keeps a single fire visible above zero.
            ((n as f64 + 1.0).log10() / (top_decade + 0.05)) * PLOT_H
        }
    };
    let slot_w = (CHART_W - LEFT - 10.0) / bins.len() as f64;
    let height = 20.0 + PLOT_H + 40.0;
    let base = 20.0 + PLOT_H;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"lateness histogram\">"
    );
    for decade in 0..=(top_decade as u32) {
        let n = 10u64.pow(decade);
        let ty = base - y(n);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>\
             <text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART_W - 10.0,
            LEFT - 6.0,
            ty + 4.0,
            compact(n)
        );
    }
    for (i, bin) in bins.iter().enumerate() {
        let x0 = LEFT + i as f64 * slot_w;
        let h = y(bin.count);
        let mut title = format!("{}: {}", bin.label, count(bin.count, "fire"));
        for (s, n) in report.schedules.iter().zip(&bin.by_schedule) {
            if *n > 0 {
                let _ = write!(title, "\n{}: {}", cut(&s.schedule, 60), thousands(*n));
            }
        }
        let colour = if bin.from_ms.is_none_or(|from| from >= 1_000) {
            "#f28e2b"
        } else {
            "#4e79a7"
        };
        let _ = writeln!(
            out,
            "<g><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"/>\
             <rect x=\"{0:.1}\" y=\"20\" width=\"{2:.1}\" height=\"{PLOT_H}\" fill=\"transparent\"/>\
             {}<text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text></g>",
            esc(&title),
            x0 + 3.0,
            base - h,
            slot_w - 6.0,
            if bin.count > 0 {
                format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
                    x0 + slot_w / 2.0,
                    base - h - 4.0,
                    compact(bin.count)
                )
            } else {
                String::new()
            },
            x0 + slot_w / 2.0,
            base + 16.0,
            esc(bin.label)
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{base}\" y2=\"{base}\"/>\n</svg>",
        CHART_W - 10.0
    );
}

/// `1234` as `1.2k`, `2500000` as `2.5M`: labels over narrow bars.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1_000),
        _ if n.is_multiple_of(1_000_000) => format!("{}M", n / 1_000_000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A round step for a linear axis up to `max` with about five ticks.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn cost(out: &mut String, report: &Report) {
    const PLOT_H: f64 = 200.0;
    const LEFT: f64 = 70.0;
    /// Bars shown at most; more days are grouped.
    const MAX_BARS: usize = 120;
    out.push_str("<h2>Cost per day</h2>\n");
    let days = &report.cost_per_day;
    let total: f64 = days.iter().map(|d| d.total_usd).sum();
    if days.is_empty() || total <= 0.0 {
        out.push_str("<p class=\"note\">No cost recorded in the window.</p>\n");
        return;
    }
    let per_bar = days.len().div_ceil(MAX_BARS);
    let bars: Vec<&[super::DayCost]> = days.chunks(per_bar).collect();
    let _ = writeln!(
        out,
        "<p class=\"note\">Sum of the mode rows' cost_usd per UTC {}, by schedule: {} in all.</p>",
        if per_bar == 1 {
            "day".to_owned()
        } else {
            format!("{per_bar} days per bar")
        },
        money(total)
    );
    out.push_str("<div class=\"legend\">");
    for (i, s) in report.schedules.iter().enumerate() {
        if s.cost_usd > 0.0 {
            let _ = write!(
                out,
                "<span><i style=\"background:{}\"></i>{} {}</span>",
                schedule_colour(i),
                esc(&cut(&s.schedule, 40)),
                money(s.cost_usd)
            );
        }
    }
    out.push_str("</div>\n");
    let bar_totals: Vec<f64> = bars
        .iter()
        .map(|b| b.iter().map(|d| d.total_usd).sum())
        .collect();
    let max = bar_totals.iter().copied().fold(0.0, f64::max);
    let step = nice_step(max);
    let top = (max / step).ceil().max(1.0) * step;
    let base = 10.0 + PLOT_H;
    let height = base + 30.0;
    let slot_w = (CHART_W - LEFT - 10.0) / bars.len() as f64;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-label=\"cost per day\">"
    );
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let ty = base - tick / top * PLOT_H;
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{ty:.1}\" y2=\"{ty:.1}\"/>\
             <text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART_W - 10.0,
            LEFT - 6.0,
            ty + 4.0,
            if step >= 1.0 {
                format!("${}", thousands(tick.round() as u64))
            } else {
                money(tick)
            }
        );
        tick += step;
    }
    // About twelve date labels, whatever the number of bars.
    let label_every = bars.len().div_ceil(12);
    for (i, bar) in bars.iter().enumerate() {
        let x0 = LEFT + i as f64 * slot_w;
        let first = &bar[0];
        let last = &bar[bar.len() - 1];
        let when = if bar.len() == 1 {
            first.date.to_string()
        } else {
            format!("{} → {}", first.date, last.date)
        };
        let mut title = format!("{when}: {}", money(bar_totals[i]));
        let mut y = base;
        let mut rects = String::new();
        for (s, schedule) in report.schedules.iter().enumerate() {
            let cost: f64 = bar
                .iter()
                .filter_map(|d| d.by_schedule.get(&schedule.schedule))
                .sum();
            if cost <= 0.0 {
                continue;
            }
            let _ = write!(title, "\n{}: {}", cut(&schedule.schedule, 60), money(cost));
            let h = cost / top * PLOT_H;
            y -= h;
            let _ = write!(
                rects,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>",
                x0 + slot_w * 0.1,
                slot_w * 0.8,
                schedule_colour(s)
            );
        }
        let label = if i % label_every == 0 {
            format!(
                "<text class=\"muted\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x0 + slot_w / 2.0,
                base + 16.0,
                first.date.format("%m-%d")
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<g><title>{}</title><rect x=\"{x0:.1}\" y=\"10\" width=\"{slot_w:.1}\" height=\"{PLOT_H}\" \
             fill=\"transparent\"/>{rects}{label}</g>",
            esc(&title)
        );
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{base}\" y2=\"{base}\"/>\n</svg>",
        CHART_W - 10.0
    );
}

fn mode_tables(out: &mut String, report: &Report) {
    if report.schedules.is_empty() {
        return;
    }
    out.push_str("<h2>Per schedule and mode</h2>\n");
    for s in &report.schedules {
        let _ = writeln!(
            out,
            "<h3>{}</h3>\n<div class=\"scroll\"><table>\n<tr><th>mode</th><th>runs</th><th>ok %</th><th>failed</th>\
             <th>timeout</th><th>blocked</th><th>skipped</th><th>interrupted</th><th>p50</th>\
             <th>p95</th><th>max</th><th>cost</th></tr>",
            esc(&s.schedule)
        );
        for m in &s.modes {
            let _ = writeln!(
                out,
                "<tr{}><td title=\"{mode}\">{mode}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if m.mode == crate::timing::CYCLE_MODE {
                    " class=\"cycle\""
                } else {
                    ""
                },
                thousands(m.runs),
                m.ok_percent,
                thousands(m.failed),
                thousands(m.timeout),
                thousands(m.blocked),
                thousands(m.skipped),
                thousands(m.interrupted),
                duration(m.duration_ms.p50),
                duration(m.duration_ms.p95),
                duration(m.duration_ms.max),
                money(m.cost_usd),
                mode = esc(&m.mode),
            );
        }
        out.push_str("</table></div>\n");
    }
}

fn bad_lines(out: &mut String, report: &Report) {
    /// Bad lines listed on the page; `--json` names more.
    const SHOWN: usize = 100;
    if report.bad_lines == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "<h2>Bad lines</h2>\n<p class=\"note\">{} of the file could not be read and \
         {} skipped{}.</p>\n<ol class=\"bad\">",
        count(report.bad_lines as u64, "line"),
        if report.bad_lines == 1 { "was" } else { "were" },
        if report.bad_lines > SHOWN {
            format!("; the first {SHOWN} are listed (`--json` names more)")
        } else {
            String::new()
        }
    );
    for bad in report.bad_lines_named.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "<li>line {}: {}</li>",
            bad.line,
            esc(&cut(&bad.reason, 300))
        );
    }
    out.push_str("</ol>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y' <img src=x onerror=alert(1)>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39; \
             &lt;img src=x onerror=alert(1)&gt;"
        );
        assert_eq!(esc("ünï 日本 🦀"), "ünï 日本 🦀");
        assert_eq!(esc("a\u{1b}b\u{0}"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn column_heights_fill_the_lane_and_keep_failures_visible() {
        let mut counts = [0u32; 7];
        counts[slot(Status::Ok)] = 999;
        counts[slot(Status::Failed)] = 1;
        let h = heights(&counts, 22.0);
        assert_eq!(h.iter().sum::<f64>(), 22.0);
        assert_eq!(h[slot(Status::Failed)], 1.0);
        counts = [1; 7];
        let h = heights(&counts, 22.0);
        assert!((h.iter().sum::<f64>() - 22.0).abs() < 1e-9, "{h:?}");
        assert!(h.iter().skip(2).all(|&v| v >= 1.0), "{h:?}");
        assert_eq!(heights(&[0; 7], 22.0), [0.0; 7]);
    }

    #[test]
    fn time_ticks_are_few_and_inside() {
        let t0 = 1_763_000_000_000;
        for span in [
            600_000,
            3_600_000,
            86_400_000,
            7 * 86_400_000,
            400 * 86_400_000i64,
        ] {
            let ticks = time_ticks(t0, t0 + span);
            assert!((1..=10).contains(&ticks.len()), "{span}: {ticks:?}");
            assert!(ticks.iter().all(|(t, _)| (t0..=t0 + span).contains(t)));
        }
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(0.3), 0.1);
        assert_eq!(nice_step(1234.0), 250.0);
    }
}
