//! A streaming reader of task_timing.tsv for `report`: the same rows and the same bad
//! lines as [`TimingLog::parse`], without holding the file or a `String` per cell.
//!
//! Why not [`TimingFile::read`]: on 1,000,000 rows it takes most of a second (the whole
//! file in memory, a csv record and five `String`s per row, chrono's general RFC 3339
//! parser three times per row) before any counting; `report` has a second for everything.
//!
//! # Rules (those of `timing.rs`, which owns the format)
//! - Lines are cut at `\n` (memchr over a reused buffer). Line 1 must be the header; blank
//!   lines are ignored; a line without a final `\n` at the end of the file is torn.
//! - A line is read on a fast path only when every cell is in the exact form the writer
//!   produces (`2026-11-21T10:00:03.120Z`, plain digits, a known word, a finite cost).
//!   Anything else goes, line by line, to [`TimingLog::parse`] itself: it either reads the
//!   row (an offset time, `+5`, `1e-3`) or names the reason the line is bad. So the fast
//!   path decides nothing the canonical parser would decide differently, and every reason
//!   is worded by `timing.rs`. The unit tests hold the two readers to the same results.
//!
//! # Consistency with writers
//! A shared lock is taken only to learn the file's length, then released: every byte
//! before that length was written by an append that had finished (appends hold the
//! exclusive lock while writing), and later appends only add bytes after it. So a running
//! service is never held up for the length of a report, and no row is seen half written.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::timing::{BadLine, CYCLE_MODE, HEADER, Row, Status, TimingError, TimingLog};

/// One row, borrowing its text from the reader's buffer; times in milliseconds since
/// the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRef<'a> {
    pub scheduled_at_ms: Option<i64>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub duration_ms: u64,
    pub schedule: &'a str,
    pub mode: &'a str,
    pub status: Status,
    pub cost_usd: Option<f64>,
    pub note: &'a str,
}

impl RowRef<'_> {
    pub fn is_cycle(&self) -> bool {
        self.mode == CYCLE_MODE
    }
}

impl<'a> From<&'a Row> for RowRef<'a> {
    fn from(row: &'a Row) -> Self {
        RowRef {
            scheduled_at_ms: row.scheduled_at.map(|t| t.timestamp_millis()),
            started_at_ms: row.started_at.timestamp_millis(),
            finished_at_ms: row.finished_at.timestamp_millis(),
            duration_ms: row.duration_ms,
            schedule: &row.schedule,
            mode: &row.mode,
            status: row.status,
            cost_usd: row.cost_usd,
            note: &row.note,
        }
    }
}

/// What the reader hands out, in file order.
pub trait Sink {
    fn row(&mut self, row: &RowRef<'_>);
    fn bad_line(&mut self, bad: BadLine);
}

/// Counts of one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Lines in the file, the header and a torn last line included.
    pub lines: usize,
    pub rows: usize,
    pub bad_lines: usize,
}

/// Reads the timing file at `path` into `sink`. A missing file is an empty log; only I/O
/// fails.
pub fn read_file(path: &Path, sink: &mut impl Sink) -> Result<Totals, TimingError> {
    let read_error = |source| TimingError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Totals::default()),
        Err(source) => return Err(read_error(source)),
    };
    let lock = fd_lock::RwLock::new(file);
    let len = {
        let guard = lock.read().map_err(|source| TimingError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
        guard.metadata().map_err(read_error)?.len()
    };
    read(lock.into_inner().take(len), sink).map_err(read_error)
}

/// Reads a timing file's bytes from `input` into `sink`; fails only on I/O.
pub fn read(mut input: impl Read, sink: &mut impl Sink) -> io::Result<Totals> {
    /// Big enough that the per-read and per-move costs vanish, small enough for the cache.
    const CHUNK: usize = 1 << 20;
    let mut lines = Lines {
        sink,
        totals: Totals::default(),
        header: HEADER.join("\t").into_bytes(),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            // One line longer than the buffer: grow until it fits.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match input.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buf[filled..filled + n]) {
            let end = filled + end;
            lines.line(&buf[start..end]);
            start = end + 1;
        }
        filled += n;
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    if filled > 0 {
        lines.torn(&buf[..filled]);
    }
    Ok(lines.totals)
}

struct Lines<'s, S> {
    sink: &'s mut S,
    totals: Totals,
    header: Vec<u8>,
}

impl<S: Sink> Lines<'_, S> {
    fn line(&mut self, bytes: &[u8]) {
        self.totals.lines += 1;
        let number = self.totals.lines;
        if number == 1 {
            if bytes != self.header {
                // The canonical parser names the problem; it never reads line 1 as a row.
                let mut text = bytes.to_vec();
                text.push(b'\n');
                self.bad(TimingLog::parse(&text).bad_lines, number);
            }
            return;
        }
        if bytes.is_empty() {
            return;
        }
        match fast_row(bytes) {
            Some(row) => {
                self.totals.rows += 1;
                self.sink.row(&row);
            }
            None => self.slow(bytes, number),
        }
    }

    /// The line read by `timing.rs` itself, behind a header so that it is line 2 there.
    fn slow(&mut self, bytes: &[u8], number: usize) {
        let mut text = Vec::with_capacity(self.header.len() + bytes.len() + 2);
        text.extend_from_slice(&self.header);
        text.push(b'\n');
        text.extend_from_slice(bytes);
        text.push(b'\n');
        let log = TimingLog::parse(&text);
        if let Some(row) = log.rows.first() {
            self.totals.rows += 1;
            self.sink.row(&RowRef::from(row));
        }
        self.bad(log.bad_lines, number);
    }

    fn torn(&mut self, bytes: &[u8]) {
        self.totals.lines += 1;
        // Without a newline the canonical parser sees only the torn line, as line 1.
        self.bad(TimingLog::parse(bytes).bad_lines, self.totals.lines);
    }

    fn bad(&mut self, bad_lines: Vec<BadLine>, number: usize) {
        for bad in bad_lines {
            self.totals.bad_lines += 1;
            self.sink.bad_line(BadLine {
                line: number,
                reason: bad.reason,
            });
        }
    }
}

/// The row when every cell is in the writer's exact form; `None` sends the line to the
/// canonical parser.
fn fast_row(bytes: &[u8]) -> Option<RowRef<'_>> {
    // Tabs are ASCII, so the cells of a valid UTF-8 line are valid UTF-8 too (and slicing
    // the line at a tab is on a character boundary).
    let text = std::str::from_utf8(bytes).ok()?;
    let mut cells = [""; 13];
    let mut start = 0;
    let mut n = 0;
    // memchr's SIMD search: `str::split` on a char was a third of the whole report.
    for tab in memchr::memchr_iter(b'\t', bytes) {
        *cells.get_mut(n).filter(|_| n < 12)? = &text[start..tab];
        n += 1;
        start = tab + 1;
    }
    if n != 12 {
        return None;
    }
    cells[12] = &text[start..];
    let [
        scheduled_at,
        started_at,
        finished_at,
        duration_ms,
        priority,
        schedule,
        _cycle,
        mode,
        attempt,
        status,
        exit_code,
        cost_usd,
        note,
    ] = cells;
    if !matches!(priority, "schedule" | "todo") {
        return None;
    }
    digits(attempt, 9)?;
    if !exit_code.is_empty() {
        digits(exit_code.strip_prefix('-').unwrap_or(exit_code), 9)?;
    }
    let cost_usd = if cost_usd.is_empty() {
        None
    } else {
        Some(cost_usd.parse::<f64>().ok().filter(|c| c.is_finite())?)
    };
    Some(RowRef {
        scheduled_at_ms: if scheduled_at.is_empty() {
            None
        } else {
            Some(time_ms(scheduled_at)?)
        },
        started_at_ms: time_ms(started_at)?,
        finished_at_ms: time_ms(finished_at)?,
        duration_ms: digits(duration_ms, 19)?,
        schedule,
        mode,
        status: status_of(status)?,
        cost_usd,
        note,
    })
}

/// A number of 1 to `max` plain ASCII digits (so it cannot overflow a u64, nor the
/// column's type when `max` is 9).
fn digits(cell: &str, max: usize) -> Option<u64> {
    if cell.is_empty() || cell.len() > max {
        return None;
    }
    cell.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn status_of(cell: &str) -> Option<Status> {
    Some(match cell {
        "ok" => Status::Ok,
        "failed" => Status::Failed,
        "timeout" => Status::Timeout,
        "blocked" => Status::Blocked,
        "skipped" => Status::Skipped,
        "interrupted" => Status::Interrupted,
        "escalated" => Status::Escalated,
        _ => return None,
    })
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`, the one form the writer
/// produces; any other form (or an impossible date) is left to chrono's parser.
fn time_ms(cell: &str) -> Option<i64> {
    let b = cell.as_bytes();
    if b.len() != 24
        || (b[4], b[7], b[10], b[13], b[16], b[19], b[23])
            != (b'-', b'-', b'T', b':', b':', b'.', b'Z')
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1_000 + milli)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date. Howard Hinnant's `days_from_civil`
/// (<https://howardhinnant.github.io/date_algorithms.html#days_from_civil>); written out
/// because chrono's `NaiveDate` path costs several times more on the hot loop.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, TimeZone, Utc};
    use rand::{Rng, SeedableRng};

    /// The fields of a [`RowRef`], owned (a cost by its bits, so NaN could compare).
    type Owned = (
        Option<i64>,
        i64,
        i64,
        u64,
        String,
        String,
        Status,
        Option<u64>,
        String,
    );

    /// What a reader produced, comparable between the two readers.
    #[derive(Default)]
    struct Collect {
        rows: Vec<Owned>,
        bad: Vec<BadLine>,
    }

    impl Collect {
        fn push(&mut self, r: &RowRef<'_>) {
            self.rows.push((
                r.scheduled_at_ms,
                r.started_at_ms,
                r.finished_at_ms,
                r.duration_ms,
                r.schedule.into(),
                r.mode.into(),
                r.status,
                r.cost_usd.map(f64::to_bits),
                r.note.into(),
            ));
        }
    }

    impl Sink for Collect {
        fn row(&mut self, row: &RowRef<'_>) {
            self.push(row);
        }
        fn bad_line(&mut self, bad: BadLine) {
            self.bad.push(bad);
        }
    }

    /// Reads `bytes` with both readers (this one through a tiny buffer too, so lines cross
    /// reads) and asserts they agree.
    fn assert_same(bytes: &[u8]) {
        let log = TimingLog::parse(bytes);
        let mut expected = Collect::default();
        for row in &log.rows {
            expected.push(&RowRef::from(row));
        }
        expected.bad = log.bad_lines;
        for chunked in [false, true] {
            let mut got = Collect::default();
            let totals = if chunked {
                read(Trickle(bytes), &mut got).unwrap()
            } else {
                read(bytes, &mut got).unwrap()
            };
            assert_eq!(
                got.bad,
                expected.bad,
                "bad lines of {:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(
                got.rows,
                expected.rows,
                "rows of {:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(totals.rows, expected.rows.len());
            assert_eq!(totals.bad_lines, expected.bad.len());
        }
    }

    /// A reader that hands out 7 bytes at a time.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn header() -> String {
        HEADER.join("\t")
    }

    const GOOD: &str = "2026-11-21T10:00:00.000Z\t2026-11-21T10:00:03.120Z\t2026-11-21T10:00:15.420Z\t12300\tschedule\tmain-loop\t20261121T100000Z-main-loop\tvalidation\t1\tok\t0\t0.125\tdone <b>\"x\"</b>";

    #[test]
    fn agrees_with_the_canonical_reader_on_the_writers_form() {
        let manual = "\t2026-02-28T23:59:59.999Z\t2024-02-29T00:00:00.000Z\t0\ttodo\ts\tc\tcycle\t3\tinterrupted\t-9\t\t";
        assert_same(format!("{}\n{GOOD}\n{manual}\n", header()).as_bytes());
        assert_same(b"");
        assert_same(format!("{}\n", header()).as_bytes());
    }

    #[test]
    fn agrees_on_forms_only_the_canonical_reader_accepts() {
        for (from, to) in [
            ("2026-11-21T10:00:03.120Z", "2026-11-21T12:00:03.120+02:00"),
            ("2026-11-21T10:00:03.120Z", "2026-11-21T10:00:03Z"),
            ("2026-11-21T10:00:03.120Z", "2026-11-21t10:00:03.120z"),
            ("2026-11-21T10:00:03.120Z", "2026-11-21T10:00:03.123456789Z"),
            ("\t12300\t", "\t+12300\t"),
            ("\t0.125\t", "\t1e-3\t"),
            ("\t0.125\t", "\t-0\t"),
            ("\t1\tok\t0\t", "\t+1\tok\t+0\t"),
            ("\t1\tok\t0\t", "\t0001\tok\t-0\t"),
        ] {
            let line = GOOD.replacen(from, to, 1);
            assert_ne!(line, GOOD);
            assert_same(format!("{}\n{line}\n", header()).as_bytes());
        }
    }

    #[test]
    fn agrees_on_bad_lines_and_their_numbers() {
        let text = format!(
            "{}\n{GOOD}\ntoo\tfew\n\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{GOOD}\n{}\n{GOOD}\n2026-11-21T10:1",
            header(),
            GOOD.replacen("2026-11-21T10:00:03.120Z", "yesterday", 1),
            GOOD.replacen("\tok\t", "\tfine\t", 1),
            GOOD.replacen("0.125", "NaN", 1),
            GOOD.replacen("0.125", "inf", 1),
            GOOD.replacen("2026-11-21T10:00:03.120Z", "2026-02-30T10:00:03.120Z", 1),
            GOOD.replacen("2026-11-21T10:00:03.120Z", "2026-11-21T24:00:03.120Z", 1),
            GOOD.replacen("\t12300\t", "\t99999999999999999999999\t", 1),
            header(),
        );
        let mut bytes = text.into_bytes();
        let at = bytes.len() - 20;
        bytes.splice(at..at, b"\xff\xfe\n".iter().copied());
        assert_same(&bytes);
        // A first line that is not the header, and a blank first line.
        assert_same(format!("scheduled_at\tstarted\n{GOOD}\n").as_bytes());
        assert_same(format!("\n{GOOD}\n{GOOD}\n").as_bytes());
        // Only a torn line.
        assert_same(b"scheduled_at\tstar");
        // A line longer than the buffer.
        let long = "x".repeat(3 << 20);
        assert_same(format!("{}\n{long}\n{GOOD}\n{long}", header()).as_bytes());
    }

    #[test]
    fn agrees_on_randomly_damaged_lines() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let start: DateTime<Utc> = Utc.with_ymd_and_hms(1999, 12, 31, 23, 0, 0).unwrap();
        let alphabet = b"0123456789-:.TZtz+\t \n\xff\xc3x";
        for _ in 0..300 {
            let mut text = header().into_bytes();
            text.push(b'\n');
            for _ in 0..20 {
                let at = start + TimeDelta::milliseconds(rng.random_range(0..10_000_000_000));
                let stamp = at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                let mut line = GOOD
                    .replace("2026-11-21T10:00:03.120Z", &stamp)
                    .into_bytes();
                for _ in 0..rng.random_range(0..3) {
                    let i = rng.random_range(0..line.len());
                    line[i] = alphabet[rng.random_range(0..alphabet.len())];
                }
                text.extend_from_slice(&line);
                text.push(b'\n');
            }
            if rng.random_bool(0.5) {
                text.truncate(text.len() - rng.random_range(1..30));
            }
            assert_same(&text);
        }
    }

    #[test]
    fn times_match_chrono_over_four_centuries() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let ms = rng.random_range(-62_167_219_200_000i64..253_402_300_799_999);
            let t = Utc.timestamp_millis_opt(ms).unwrap();
            let text = t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            assert_eq!(time_ms(&text), Some(ms), "{text}");
        }
        assert_eq!(time_ms("2025-02-29T00:00:00.000Z"), None);
        assert!(time_ms("2024-02-29T00:00:00.000Z").is_some());
        assert_eq!(time_ms("2026-11-21T10:00:60.000Z"), None);
    }

    #[test]
    fn a_missing_file_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut got = Collect::default();
        let totals = read_file(&dir.path().join("task_timing.tsv"), &mut got).unwrap();
        assert_eq!(totals, Totals::default());
    }
}
