//! `task_timing.tsv`: one row per mode run and one summary row per cycle (SPEC §4).
//!
//! This module owns the file's format and the discipline of writing it; it knows nothing
//! of cycles or schedules beyond the cells of a [`Row`].
//!
//! # Format
//! - Tab-separated, `\n`-terminated lines. The first line is exactly [`HEADER`] joined by
//!   tabs. Cells are written by hand (see [`encode`]) and read with the `csv` crate, tab
//!   delimiter, quoting disabled on both sides: a `"` or `\` in a note is written and read
//!   back verbatim.
//! - Times are RFC 3339 UTC with milliseconds and a `Z` suffix (`2026-11-21T10:00:03.120Z`);
//!   finer precision is truncated. `None` is an empty cell (`scheduled_at` of a manual
//!   run, `exit_code` of a child killed by a signal, unknown `cost_usd`). A non-finite
//!   cost is written as an empty cell.
//! - The note is one line of at most [`NOTE_MAX_CHARS`] characters ([`sanitize_note`]);
//!   the writer sanitizes it (and keeps the other text cells on one line) itself, so no
//!   tab or newline can ever reach the file from a cell.
//!
//! # Appending
//! Rows are encoded whole in memory first. The file is opened once with `O_APPEND`
//! (created with mode 0644) and the descriptor kept for later appends (reopened when the
//! path no longer names it: a rotated file); for each append an exclusive `flock` is taken
//! on it (fd-lock, blocking), and under that lock:
//! - an empty file gets the header line first, in the same write as the rows, so the
//!   header is written exactly once, by whoever finds the file empty;
//! - a non-empty file whose last byte is not `\n` ends in a torn line (a writer crashed
//!   mid-row); the write is prefixed with `\n` so the torn line stays alone and the new
//!   rows start on their own lines;
//! - one `write_all` of the whole buffer, then `fdatasync` (unless
//!   `TimingFile::without_sync`, for benchmarks), then the lock is released.
//!
//! Only the last byte is ever read to append, never the file (and not even that when the
//! file still ends where this process's last write did). The `flock` excludes other
//! processes; threads of one process share the one descriptor, whose lock is an open file
//! description's and so does not exclude them: a mutex around the descriptor does.
//! Appending blocks: call it from a thread of its own (the recorder's) in async code.
//!
//! # Reading
//! Tolerant: reading fails only on I/O, never on content. It takes a shared lock so it
//! never sees a row half written. A first line that is not the exact header, a line
//! without 13 cells, a cell that does not parse, and a torn last line (no trailing
//! newline) are each skipped and recorded as a [`BadLine`] with its 1-based line number
//! and the reason; the other rows are still read. Blank lines are ignored. A missing
//! file is an empty log.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};

/// The 13 column names, in file order; the first line of the file is these joined by tabs.
pub const HEADER: [&str; 13] = [
    "scheduled_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "priority",
    "schedule",
    "cycle",
    "mode",
    "attempt",
    "status",
    "exit_code",
    "cost_usd",
    "note",
];

/// The longest note, in characters, that the file holds.
pub const NOTE_MAX_CHARS: usize = 500;

/// The `mode` cell of the summary row each cycle ends with.
pub const CYCLE_MODE: &str = "cycle";

/// A value of the `priority` or `status` column that is not one of the known words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {column} {value:?} (expected one of: {expected})")]
pub struct ParseValueError {
    pub column: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Why a cycle ran: fired or run by a schedule, or a manual run of a TODO item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Schedule,
    Todo,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Schedule => "schedule",
            Priority::Todo => "todo",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(Priority::Schedule),
            "todo" => Ok(Priority::Todo),
            _ => Err(ParseValueError {
                column: "priority",
                value: s.to_owned(),
                expected: "schedule, todo",
            }),
        }
    }
}

/// The outcome of a mode run or a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    Failed,
    Timeout,
    Blocked,
    Skipped,
    Interrupted,
    Escalated,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::Failed,
        Status::Timeout,
        Status::Blocked,
        Status::Skipped,
        Status::Interrupted,
        Status::Escalated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Blocked => "blocked",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
            Status::Escalated => "escalated",
        }
    }

    /// Whether a run with this status failed: `failed`, `timeout` or `blocked`. What extends
    /// a schedule's failure streak is a row's [`Row::counts_as_failure`], which also reads the
    /// note.
    pub fn counts_as_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Timeout | Status::Blocked)
    }
}

/// How the note of a run stopped by an agent's rate limit starts (SPEC §8).
pub const RATE_LIMITED: &str = "rate limited";

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseValueError {
                column: "status",
                value: s.to_owned(),
                expected: "ok, failed, timeout, blocked, skipped, interrupted, escalated",
            })
    }
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The cron instant of the fire; `None` for a manual run.
    pub scheduled_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub priority: Priority,
    pub schedule: String,
    pub cycle: String,
    /// A mode slug, or [`CYCLE_MODE`] for the cycle's summary row.
    pub mode: String,
    pub attempt: u32,
    pub status: Status,
    /// `None` when the child was killed by a signal or never started.
    pub exit_code: Option<i32>,
    pub cost_usd: Option<f64>,
    pub note: String,
}

/// The one rule of `max_failures` (SPEC §4, §8): a `failed`, `timeout` or `blocked` row
/// counts toward a failure streak, unless it was a rate limit (its note starts with
/// [`RATE_LIMITED`]), which says nothing about the work. For readers that keep a row's
/// cells apart (the report); others call [`Row::counts_as_failure`].
pub fn counts_as_failure(status: Status, note: &str) -> bool {
    status.counts_as_failure() && !note.starts_with(RATE_LIMITED)
}

impl Row {
    /// See [`counts_as_failure`].
    pub fn counts_as_failure(&self) -> bool {
        counts_as_failure(self.status, &self.note)
    }
}

/// Consecutive cycle rows that count as failures ([`Row::counts_as_failure`]) at the end of a
/// schedule's history. `ok` and `escalated` rows end a streak; `skipped`, `interrupted` and
/// rate-limited rows neither count nor end it.
pub fn failure_streak<'a>(cycle_rows: impl DoubleEndedIterator<Item = &'a Row>) -> u32 {
    let mut streak = 0;
    for row in cycle_rows.rev() {
        if row.counts_as_failure() {
            streak += 1;
        } else if matches!(row.status, Status::Ok | Status::Escalated) {
            break;
        }
    }
    streak
}

/// A line the reader skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What [`TimingFile::read`] found: the rows that parsed, in file order, and the lines
/// it skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimingLog {
    pub rows: Vec<Row>,
    pub bad_lines: Vec<BadLine>,
}

#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    #[error(
        "cannot open {path} for appending: {source} (check that its directory exists and is writable)",
        path = path.display()
    )]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source}", path = path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "cannot append to {path}: {source} (a partly written row is terminated by the next append)",
        path = path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot flush {path} to disk: {source}", path = path.display())]
    Sync { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}", path = path.display())]
    Read { path: PathBuf, source: io::Error },
}

/// Makes `s` fit the `note` cell: every control character (tab, CR, LF, escape…) and
/// Unicode line or paragraph separator becomes a space, and a text longer than
/// [`NOTE_MAX_CHARS`] characters is cut to that many, its last one replaced by `…`.
pub fn sanitize_note(s: &str) -> String {
    let mut chars = s.chars().map(one_line_char);
    let mut note: String = chars.by_ref().take(NOTE_MAX_CHARS).collect();
    if chars.next().is_some() {
        note.pop();
        note.push('…');
    }
    note
}

fn one_line_char(c: char) -> char {
    if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
        ' '
    } else {
        c
    }
}

fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Encodes `header` (when asked) and `rows` as the exact bytes of their lines.
///
/// Written by hand rather than through `csv::Writer` (the reader still uses csv): every cell
/// is one-line text without a tab by construction (see [`one_line_char`]), so a line is its
/// cells joined by tabs. Building a csv writer (an 8 KiB zeroed buffer) and 13 `String`s per
/// row cost twice the lock, write and unlock of an append without fdatasync (BENCHMARKS.md,
/// figure 3). The test `hand_encoder_matches_csv` holds it to the csv writer's bytes.
fn encode(header: bool, rows: &[Row]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 256 + if header { 128 } else { 0 });
    if header {
        buf.extend_from_slice(header_line().as_bytes());
        buf.push(b'\n');
    }
    for row in rows {
        encode_row(&mut buf, row);
    }
    buf
}

fn encode_row(buf: &mut Vec<u8>, row: &Row) {
    use std::io::Write as _;
    if let Some(at) = &row.scheduled_at {
        push_time(buf, at);
    }
    buf.push(b'\t');
    push_time(buf, &row.started_at);
    buf.push(b'\t');
    push_time(buf, &row.finished_at);
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "\t{}\t{}\t", row.duration_ms, row.priority.as_str());
    push_one_line(buf, &row.schedule, usize::MAX);
    buf.push(b'\t');
    push_one_line(buf, &row.cycle, usize::MAX);
    buf.push(b'\t');
    push_one_line(buf, &row.mode, usize::MAX);
    let _ = write!(buf, "\t{}\t{}\t", row.attempt, row.status.as_str());
    if let Some(code) = row.exit_code {
        let _ = write!(buf, "{code}");
    }
    buf.push(b'\t');
    if let Some(cost) = row.cost_usd.filter(|c| c.is_finite()) {
        let _ = write!(buf, "{cost}");
    }
    buf.push(b'\t');
    push_one_line(buf, &row.note, NOTE_MAX_CHARS);
    buf.push(b'\n');
}

/// `s` as [`sanitize_note`] with at most `max_chars` characters makes it, without a copy.
fn push_one_line(buf: &mut Vec<u8>, s: &str, max_chars: usize) {
    // A text of at most `max_chars` bytes has at most that many characters.
    if s.len() > max_chars && s.chars().nth(max_chars).is_some() {
        buf.extend_from_slice(sanitize_note(s).as_bytes());
        return;
    }
    if s.bytes().all(|b| b >= 0x20 && b != 0x7f && b < 0x80) {
        buf.extend_from_slice(s.as_bytes());
        return;
    }
    let mut utf8 = [0u8; 4];
    for c in s.chars() {
        buf.extend_from_slice(one_line_char(c).encode_utf8(&mut utf8).as_bytes());
    }
}

/// `t` as [`format_time`] writes it: `YYYY-MM-DDTHH:MM:SS.mmmZ`. Years outside 0..=9999 and
/// leap seconds take chrono's formatter.
fn push_time(buf: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // Components of the naive time: on a `DateTime` each accessor converts again.
    let t = t.naive_utc();
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        buf.extend_from_slice(format_time(&t.and_utc()).as_bytes());
        return;
    }
    let digits = |buf: &mut Vec<u8>, n: u32, width: u32| {
        for place in (0..width).rev() {
            buf.push(b'0' + (n / 10u32.pow(place) % 10) as u8);
        }
    };
    digits(buf, year as u32, 4);
    buf.push(b'-');
    digits(buf, t.month(), 2);
    buf.push(b'-');
    digits(buf, t.day(), 2);
    buf.push(b'T');
    digits(buf, t.hour(), 2);
    buf.push(b':');
    digits(buf, t.minute(), 2);
    buf.push(b':');
    digits(buf, t.second(), 2);
    buf.push(b'.');
    digits(buf, t.nanosecond() / 1_000_000, 3);
    buf.push(b'Z');
}

fn header_line() -> String {
    HEADER.join("\t")
}

/// The timing file of one instance. Clones share one open descriptor.
#[derive(Debug, Clone)]
pub struct TimingFile {
    path: PathBuf,
    sync: bool,
    open: std::sync::Arc<std::sync::Mutex<Option<OpenFile>>>,
}

/// The descriptor kept open between appends, so an append costs a lock, an fstat and a write
/// (the raw loop it is measured against costs a lock and a write).
#[derive(Debug)]
struct OpenFile {
    lock: fd_lock::RwLock<File>,
    /// Where this process's last write ended: when the file still ends there, its last byte
    /// is our own newline and need not be read back.
    end: Option<u64>,
    /// (device, inode) of the descriptor, and when the path was last checked against it: a
    /// file rotated away (renamed, or deleted) is reopened within a second.
    id: (u64, u64),
    checked: std::time::Instant,
}

/// How often the path is compared with the open descriptor.
const ROTATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl TimingFile {
    /// A handle on `path`; every append is flushed to disk with `fdatasync`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TimingFile {
            path: path.into(),
            sync: true,
            open: Default::default(),
        }
    }

    /// Skips `fdatasync` after appends. For benchmarks and fuzzing only (the `testing`
    /// feature): a crash may lose rows.
    #[cfg(any(test, feature = "testing"))]
    pub fn without_sync(self) -> Self {
        TimingFile {
            sync: false,
            ..self
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row (see the module docs for the locking discipline).
    pub fn append(&self, row: &Row) -> Result<(), TimingError> {
        self.append_all(std::slice::from_ref(row))
    }

    /// Appends all `rows` with one write under one lock; nothing to do for none.
    pub fn append_all(&self, rows: &[Row]) -> Result<(), TimingError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.append_bytes(&encode(false, rows))
    }

    /// Creates the file if needed and writes the header if it is empty (for `init`).
    /// Like an append, it also terminates a torn last line.
    pub fn ensure_header(&self) -> Result<(), TimingError> {
        self.append_bytes(&[])
    }

    fn open_file(&self) -> io::Result<OpenFile> {
        use std::os::unix::fs::MetadataExt;
        // Read access only serves the one-byte look at the end for torn-line repair.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&self.path)?;
        let meta = file.metadata()?;
        Ok(OpenFile {
            lock: fd_lock::RwLock::new(file),
            end: None,
            id: (meta.dev(), meta.ino()),
            checked: std::time::Instant::now(),
        })
    }

    fn append_bytes(&self, body: &[u8]) -> Result<(), TimingError> {
        use std::os::unix::fs::MetadataExt;
        let path = || self.path.clone();
        let mut slot = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale = match slot.as_ref() {
            None => true,
            Some(open) if open.checked.elapsed() >= ROTATION_CHECK => {
                std::fs::metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != open.id)
            }
            Some(_) => false,
        };
        if stale {
            *slot = Some(self.open_file().map_err(|source| TimingError::Open {
                path: path(),
                source,
            })?);
        }
        let open = slot.as_mut().expect("opened above");
        if !stale && open.checked.elapsed() >= ROTATION_CHECK {
            open.checked = std::time::Instant::now();
        }
        let known_end = open.end;
        let mut guard = open.lock.write().map_err(|source| TimingError::Lock {
            path: path(),
            source,
        })?;

        // The length decides the header and the torn-tail repair. lseek(SEEK_END) rather
        // than fstat: it is the cheaper call, and it runs once per append.
        let len = guard
            .seek(io::SeekFrom::End(0))
            .map_err(|source| TimingError::Read {
                path: path(),
                source,
            })?;
        let prefix: Vec<u8> = if len == 0 {
            encode(true, &[])
        } else if known_end == Some(len) {
            Vec::new()
        } else {
            let mut last = [0u8; 1];
            guard
                .read_exact_at(&mut last, len - 1)
                .map_err(|source| TimingError::Read {
                    path: path(),
                    source,
                })?;
            if last[0] == b'\n' {
                Vec::new()
            } else {
                vec![b'\n']
            }
        };
        if prefix.is_empty() && body.is_empty() {
            return Ok(());
        }

        let whole;
        let bytes = if prefix.is_empty() {
            body
        } else {
            whole = [prefix.as_slice(), body].concat();
            &whole
        };
        let written = guard.write_all(bytes).map_err(|source| TimingError::Write {
            path: path(),
            source,
        });
        if written.is_err() {
            // A partial write leaves a torn line; the next append must look at the end.
            drop(guard);
            open.end = None;
            return written;
        }
        if self.sync {
            guard.sync_data().map_err(|source| TimingError::Sync {
                path: path(),
                source,
            })?;
            if len == 0 {
                // The file may have just been created: make its directory entry durable too.
                self.sync_parent_dir().map_err(|source| TimingError::Sync {
                    path: path(),
                    source,
                })?;
            }
        }
        drop(guard);
        open.end = Some(len + bytes.len() as u64);
        Ok(())
    }

    fn sync_parent_dir(&self) -> io::Result<()> {
        let parent = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    }

    /// Reads every row that parses; see the module docs for what counts as a bad line.
    pub fn read(&self) -> Result<TimingLog, TimingError> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TimingLog::default()),
            Err(source) => {
                return Err(TimingError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let lock = fd_lock::RwLock::new(file);
        let guard = lock.read().map_err(|source| TimingError::Lock {
            path: self.path.clone(),
            source,
        })?;
        let mut bytes = Vec::new();
        (&*guard)
            .read_to_end(&mut bytes)
            .map_err(|source| TimingError::Read {
                path: self.path.clone(),
                source,
            })?;
        drop(guard);
        Ok(TimingLog::parse(&bytes))
    }

    /// The rows at the end of the file that finished at or after `since`, in file order,
    /// without reading the whole file: it is read backwards in growing chunks until a chunk
    /// starts with a row that finished before `since - RECENT_SLACK` (rows are appended as
    /// they finish; concurrent writers reorder them by less than the slack). Bad lines are
    /// skipped. What budgets need: today's rows of a file that holds years.
    pub fn read_recent(&self, since: DateTime<Utc>) -> Result<Vec<Row>, TimingError> {
        let read_error = |source| TimingError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(read_error(source)),
        };
        let lock = fd_lock::RwLock::new(file);
        let guard = lock.read().map_err(|source| TimingError::Lock {
            path: self.path.clone(),
            source,
        })?;
        let len = guard.metadata().map_err(read_error)?.len();
        let floor = since - RECENT_SLACK;
        let mut chunk: u64 = 256 * 1024;
        loop {
            let start = len.saturating_sub(chunk);
            let mut bytes = vec![0u8; (len - start) as usize];
            guard.read_exact_at(&mut bytes, start).map_err(read_error)?;
            // The header stands in for the line the chunk starts inside of.
            let body = if start == 0 {
                &bytes[..]
            } else {
                match memchr::memchr(b'\n', &bytes) {
                    Some(i) => &bytes[i + 1..],
                    None => &[][..],
                }
            };
            let mut text = if start == 0 {
                Vec::new()
            } else {
                let mut header = header_line().into_bytes();
                header.push(b'\n');
                header
            };
            text.extend_from_slice(body);
            let rows = TimingLog::parse(&text).rows;
            let enough = rows.first().is_some_and(|r| r.finished_at < floor);
            if start == 0 || enough {
                return Ok(rows
                    .into_iter()
                    .filter(|r| r.finished_at >= since)
                    .collect());
            }
            chunk = chunk.saturating_mul(4);
        }
    }
}

/// How far out of finish order rows may be appended: [`TimingFile::read_recent`] reads this
/// much further back than asked.
pub const RECENT_SLACK: chrono::TimeDelta = chrono::TimeDelta::hours(1);

impl TimingLog {
    /// Parses the contents of a timing file; never fails (see the module docs).
    pub fn parse(bytes: &[u8]) -> TimingLog {
        let mut log = TimingLog::default();
        let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (complete, torn) = bytes.split_at(complete_len);

        let first_line = complete.split(|&b| b == b'\n').next().unwrap_or_default();
        if !complete.is_empty() && first_line != header_line().as_bytes() {
            log.bad_lines.push(BadLine {
                line: 1,
                reason: "expected the header line (the 13 column names separated by tabs)"
                    .to_owned(),
            });
        }

        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .quoting(false)
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(complete);
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let line = record_line(complete, &record);
                    if line == 1 {
                        continue; // the header, judged above
                    }
                    match parse_record(&record) {
                        Ok(row) => log.rows.push(row),
                        Err(reason) => log.bad_lines.push(BadLine { line, reason }),
                    }
                }
                Err(e) => {
                    // Unreachable with quoting off on an in-memory slice; stop rather than loop.
                    log.bad_lines.push(BadLine {
                        line: reader.position().line() as usize,
                        reason: format!("unreadable from here on: {e}"),
                    });
                    break;
                }
            }
        }

        if !torn.is_empty() {
            log.bad_lines.push(BadLine {
                line: complete.iter().filter(|&&b| b == b'\n').count() + 1,
                reason: "incomplete last line (no newline at its end): a writer stopped \
                         mid-row; the next append terminates it"
                    .to_owned(),
            });
        }
        log
    }
}

/// The 1-based line a record starts on. The csv reader positions a record before the
/// blank lines it skips, so those are stepped over here.
fn record_line(bytes: &[u8], record: &csv::ByteRecord) -> usize {
    let Some(pos) = record.position() else {
        return 0;
    };
    let start = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
    let blank = bytes
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| b == b'\n')
        .count();
    usize::try_from(pos.line()).unwrap_or(usize::MAX) + blank
}

fn parse_record(record: &csv::ByteRecord) -> Result<Row, String> {
    if record.len() != HEADER.len() {
        return Err(format!(
            "expected {} tab-separated cells, found {}",
            HEADER.len(),
            record.len()
        ));
    }
    let mut cells = [""; 13];
    for (i, cell) in record.iter().enumerate() {
        cells[i] =
            std::str::from_utf8(cell).map_err(|_| format!("{} is not valid UTF-8", HEADER[i]))?;
    }
    let [
        scheduled_at,
        started_at,
        finished_at,
        duration_ms,
        priority,
        schedule,
        cycle,
        mode,
        attempt,
        status,
        exit_code,
        cost_usd,
        note,
    ] = cells;

    Ok(Row {
        scheduled_at: optional(scheduled_at, |s| parse_time("scheduled_at", s))?,
        started_at: parse_time("started_at", started_at)?,
        finished_at: parse_time("finished_at", finished_at)?,
        duration_ms: parse_number("duration_ms", duration_ms)?,
        priority: priority
            .parse()
            .map_err(|e: ParseValueError| e.to_string())?,
        schedule: schedule.to_owned(),
        cycle: cycle.to_owned(),
        mode: mode.to_owned(),
        attempt: parse_number("attempt", attempt)?,
        status: status.parse().map_err(|e: ParseValueError| e.to_string())?,
        exit_code: optional(exit_code, |s| parse_number("exit_code", s))?,
        cost_usd: optional(cost_usd, parse_cost)?,
        note: note.to_owned(),
    })
}

fn optional<T>(
    cell: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if cell.is_empty() {
        Ok(None)
    } else {
        parse(cell).map(Some)
    }
}

fn parse_time(column: &str, cell: &str) -> Result<DateTime<Utc>, String> {
    use chrono::Datelike;
    let time = DateTime::parse_from_rfc3339(cell)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("bad {column} {cell:?}: {e} (expected an RFC 3339 time)"))?;
    // An offset can carry a year-0000 local time below year 0 in UTC, which RFC 3339 cannot
    // write back: such a row would not survive its own round trip (found by fuzzing).
    if !(0..=9999).contains(&time.year()) {
        return Err(format!(
            "bad {column} {cell:?}: outside the years 0000 to 9999 in UTC"
        ));
    }
    Ok(time)
}

fn parse_number<T: FromStr>(column: &str, cell: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    cell.parse()
        .map_err(|e| format!("bad {column} {cell:?}: {e}"))
}

fn parse_cost(cell: &str) -> Result<f64, String> {
    let cost: f64 = parse_number("cost_usd", cell)?;
    if cost.is_finite() {
        Ok(cost)
    } else {
        Err(format!("bad cost_usd {cell:?}: not a finite number"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_recent_reads_back_only_as_far_as_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let file = TimingFile::new(dir.path().join("t.tsv")).without_sync();
        assert!(file.read_recent(Utc::now()).unwrap().is_empty(), "no file");
        let base: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        // Two days of rows, one a minute, with notes long enough to span many chunks.
        let rows: Vec<Row> = (0..2 * 1440)
            .map(|minute| {
                let at = base + chrono::TimeDelta::minutes(minute);
                Row {
                    scheduled_at: None,
                    started_at: at,
                    finished_at: at,
                    duration_ms: 0,
                    priority: Priority::Schedule,
                    schedule: "s".into(),
                    cycle: format!("c{minute}"),
                    mode: CYCLE_MODE.into(),
                    attempt: 1,
                    status: Status::Ok,
                    exit_code: None,
                    cost_usd: Some(0.5),
                    note: "n".repeat(400),
                }
            })
            .collect();
        file.append_all(&rows).unwrap();
        let day2: DateTime<Utc> = "2026-12-02T00:00:00Z".parse().unwrap();
        let recent = file.read_recent(day2).unwrap();
        assert_eq!(recent.len(), 1440);
        assert_eq!(recent[0].cycle, "c1440");
        assert_eq!(recent.last().unwrap().cycle, "c2879");
        // Back to the very start.
        assert_eq!(file.read_recent(base).unwrap().len(), 2880);
    }

    use super::*;
    use chrono::TimeZone;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    const ROWS_PER_WRITER: usize = 200;

    fn t(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap()
            + chrono::Duration::milliseconds(i64::from(ms))
    }

    fn row(note: &str) -> Row {
        Row {
            scheduled_at: Some(t(10, 0, 0, 0)),
            started_at: t(10, 0, 3, 120),
            finished_at: t(10, 0, 15, 420),
            duration_ms: 12_300,
            priority: Priority::Schedule,
            schedule: "main-loop".into(),
            cycle: "20261121T100000Z-main-loop".into(),
            mode: "validation".into(),
            attempt: 1,
            status: Status::Ok,
            exit_code: Some(0),
            cost_usd: Some(0.125),
            note: note.into(),
        }
    }

    /// The one failure rule: `failed`, `timeout` and `blocked` count, a rate limit does
    /// not (SPEC §8); `ok` and `escalated` end a streak, the rest are neutral.
    #[test]
    fn failure_streak_counts_failures_but_not_rate_limits() {
        let cycle = |status, note: &str| Row {
            mode: CYCLE_MODE.into(),
            status,
            ..row(note)
        };
        let rows = [
            cycle(Status::Failed, "x"),
            cycle(Status::Ok, "x"),
            cycle(Status::Failed, "2 modes: 1 ok, 1 failed"),
            cycle(Status::Failed, "rate limited until 2026-11-21T12:00:00Z"),
            cycle(Status::Skipped, "overlap skip"),
            cycle(Status::Timeout, "x"),
            cycle(Status::Interrupted, "x"),
            cycle(Status::Blocked, "x"),
        ];
        assert_eq!(failure_streak(rows.iter()), 3);
        assert!(!rows[3].counts_as_failure());
        assert!(rows[3].status.counts_as_failure());
        let escalated = [cycle(Status::Failed, "x"), cycle(Status::Escalated, "x")];
        assert_eq!(failure_streak(escalated.iter()), 0);
    }

    /// The csv writer's encoding of a row, which the hand-written encoder replaced.
    fn csv_encoded(row: &Row) -> Vec<u8> {
        let one_line = |s: &str| -> String { s.chars().map(one_line_char).collect() };
        let cells = [
            row.scheduled_at
                .as_ref()
                .map(format_time)
                .unwrap_or_default(),
            format_time(&row.started_at),
            format_time(&row.finished_at),
            row.duration_ms.to_string(),
            row.priority.to_string(),
            one_line(&row.schedule),
            one_line(&row.cycle),
            one_line(&row.mode),
            row.attempt.to_string(),
            row.status.to_string(),
            row.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            row.cost_usd
                .filter(|c| c.is_finite())
                .map(|c| c.to_string())
                .unwrap_or_default(),
            sanitize_note(&row.note),
        ];
        let mut buf = Vec::new();
        let mut writer = csv::WriterBuilder::new()
            .delimiter(b'\t')
            .quote_style(csv::QuoteStyle::Never)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(&mut buf);
        writer.write_record(cells).unwrap();
        writer.flush().unwrap();
        drop(writer);
        buf
    }

    #[test]
    fn hand_encoder_matches_csv() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let texts = [
            "",
            "plain",
            "tab\there",
            "new\nline\r\n",
            "unicode ✓ and \u{2028} \u{2029} \u{85} \u{7f} \u{1b}[31m",
            "\"quoted\" \\ back",
        ];
        let times = [
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 59, 59).unwrap()
                + chrono::Duration::milliseconds(999),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-5, 1, 1, 0, 0, 0).unwrap(),
            // A leap second: chrono writes it as second 60.
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_milli_opt(23, 59, 59, 1_500)
                .unwrap()
                .and_utc(),
        ];
        for i in 0..2_000 {
            let mut r = row(texts[i % texts.len()]);
            let pick = |rng: &mut rand::rngs::StdRng| times[rng.random_range(0..times.len())];
            r.scheduled_at = rng.random_bool(0.5).then(|| pick(&mut rng));
            r.started_at = if rng.random_bool(0.5) {
                pick(&mut rng)
            } else {
                Utc.timestamp_millis_opt(rng.random_range(0..4_102_444_800_000))
                    .unwrap()
            };
            r.finished_at =
                r.started_at + chrono::Duration::nanoseconds(rng.random_range(0..i64::MAX / 4));
            r.duration_ms = rng.random();
            r.schedule = texts[rng.random_range(0..texts.len())].repeat(rng.random_range(0..3));
            r.mode = texts[rng.random_range(0..texts.len())].into();
            r.attempt = rng.random();
            r.status = Status::ALL[i % Status::ALL.len()];
            r.priority = if i % 2 == 0 {
                Priority::Todo
            } else {
                Priority::Schedule
            };
            r.exit_code = rng.random_bool(0.7).then(|| rng.random());
            r.cost_usd = match i % 5 {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(f64::INFINITY),
                3 => Some(rng.random::<f64>() * 10.0),
                _ => Some(1e-7),
            };
            // Notes around the 500-character limit, with multi-byte characters.
            let unit = texts[rng.random_range(0..texts.len())];
            let n = rng.random_range(0..=(NOTE_MAX_CHARS + 3));
            r.note = unit.chars().chain("é".chars()).cycle().take(n).collect();
            assert_eq!(
                String::from_utf8(encode(false, std::slice::from_ref(&r))).unwrap(),
                String::from_utf8(csv_encoded(&r)).unwrap(),
                "row {r:?}"
            );
        }
        let header = String::from_utf8(encode(true, &[])).unwrap();
        assert_eq!(header, format!("{}\n", HEADER.join("\t")));
    }

    /// A row whose note names its writer and index and is long (~430 bytes), so that a
    /// batch of them is bigger than PIPE_BUF.
    fn writer_row(writer: usize, i: usize) -> Row {
        let filler = "\"quoted\" \\ payload ".repeat(21);
        let mut r = row(&format!("w{writer} r{i} {filler}"));
        r.attempt = u32::try_from(i).unwrap();
        r.mode = format!("writer-{writer}");
        r
    }

    /// Appends `ROWS_PER_WRITER` rows: half one by one, half in batches of 10.
    fn append_as_writer(file: &TimingFile, writer: usize) {
        let half = ROWS_PER_WRITER / 2;
        for i in 0..half {
            file.append(&writer_row(writer, i)).unwrap();
        }
        let rest: Vec<Row> = (half..ROWS_PER_WRITER)
            .map(|i| writer_row(writer, i))
            .collect();
        for batch in rest.chunks(10) {
            file.append_all(batch).unwrap();
        }
    }

    fn assert_every_writer_row_once(path: &Path, writers: usize) {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text.lines().filter(|l| *l == header_line()).count(),
            1,
            "exactly one header"
        );
        assert!(text.starts_with(&header_line()));
        let log = TimingFile::new(path).read().unwrap();
        assert_eq!(log.bad_lines, vec![]);
        assert_eq!(log.rows.len(), writers * ROWS_PER_WRITER);
        assert_eq!(text.lines().count(), writers * ROWS_PER_WRITER + 1);
        let mut seen = HashSet::new();
        for r in &log.rows {
            let (w, i) =
                r.note
                    .split(' ')
                    .take(2)
                    .fold((0, 0), |acc, word| match word.split_at(1) {
                        ("w", n) => (n.parse().unwrap(), acc.1),
                        ("r", n) => (acc.0, n.parse().unwrap()),
                        _ => panic!("unexpected note {:?}", r.note),
                    });
            assert_eq!(r, &writer_row(w, i), "row intact");
            assert!(seen.insert((w, i)), "row w{w} r{i} written twice");
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = TimingFile::new(dir.path().join("task_timing.tsv"));
        let full = row(r#"said "hi" \t \\n 'quoted' — ünïcödé"#);
        let empty = Row {
            scheduled_at: None,
            priority: Priority::Todo,
            mode: CYCLE_MODE.into(),
            attempt: 3,
            status: Status::Interrupted,
            exit_code: None,
            cost_usd: None,
            note: String::new(),
            ..row("")
        };
        let negative = Row {
            exit_code: Some(-9),
            cost_usd: Some(1e-7),
            status: Status::Escalated,
            ..row("x")
        };
        file.append_all(&[full.clone(), empty.clone()]).unwrap();
        file.append(&negative).unwrap();
        let log = file.read().unwrap();
        assert_eq!(log.bad_lines, vec![]);
        assert_eq!(log.rows, vec![full, empty, negative]);
    }

    #[test]
    fn every_status_and_priority_round_trips_through_text() {
        for status in Status::ALL {
            assert_eq!(status.to_string().parse::<Status>().unwrap(), status);
        }
        for priority in [Priority::Schedule, Priority::Todo] {
            assert_eq!(priority.to_string().parse::<Priority>().unwrap(), priority);
        }
        assert_eq!(Status::Timeout.to_string(), "timeout");
        assert!("OK".parse::<Status>().is_err());
        let err = "cron".parse::<Priority>().unwrap_err().to_string();
        assert!(err.contains("schedule, todo"), "{err}");
    }

    #[test]
    fn cells_are_written_in_the_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let file = TimingFile::new(&path);
        let manual = Row {
            scheduled_at: None,
            exit_code: None,
            cost_usd: None,
            note: "a \"b\"".into(),
            ..row("")
        };
        file.append_all(&[row("done"), manual]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER.join("\t"));
        assert_eq!(
            lines[1],
            "2026-11-21T10:00:00.000Z\t2026-11-21T10:00:03.120Z\t2026-11-21T10:00:15.420Z\t\
             12300\tschedule\tmain-loop\t20261121T100000Z-main-loop\tvalidation\t1\tok\t0\t0.125\tdone"
        );
        assert_eq!(
            lines[2],
            "\t2026-11-21T10:00:03.120Z\t2026-11-21T10:00:15.420Z\t\
             12300\tschedule\tmain-loop\t20261121T100000Z-main-loop\tvalidation\t1\tok\t\t\ta \"b\""
        );
        assert!(text.ends_with('\n'));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o133, 0, "not executable, not group/world-writable");
    }

    #[test]
    fn writer_keeps_every_cell_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = TimingFile::new(dir.path().join("task_timing.tsv"));
        let messy = Row {
            schedule: "main\tloop".into(),
            mode: "va\nlidation".into(),
            note: "line one\nline two\tcol\r\n\u{1b}[31mred".into(),
            ..row("")
        };
        file.append(&messy).unwrap();
        let log = file.read().unwrap();
        assert_eq!(log.bad_lines, vec![]);
        assert_eq!(log.rows.len(), 1);
        assert_eq!(log.rows[0].schedule, "main loop");
        assert_eq!(log.rows[0].mode, "va lidation");
        assert_eq!(log.rows[0].note, "line one line two col   [31mred");
    }

    #[test]
    fn sanitize_note_makes_one_short_line() {
        assert_eq!(sanitize_note("a\tb\nc\r\nd"), "a b c  d");
        assert_eq!(
            sanitize_note(r#"keep "quotes" \ and \n"#),
            r#"keep "quotes" \ and \n"#
        );
        let exactly = "é".repeat(NOTE_MAX_CHARS);
        assert_eq!(sanitize_note(&exactly), exactly);

        let long = "日本語🦀".repeat(150); // 600 multibyte chars
        let note = sanitize_note(&long);
        assert_eq!(note.chars().count(), NOTE_MAX_CHARS);
        assert!(note.ends_with('…'));
        assert!(long.starts_with(note.trim_end_matches('…')));
        assert!(!note.contains(['\t', '\n', '\r']));
    }

    #[test]
    fn header_is_written_once_by_the_first_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let file = TimingFile::new(&path);
        file.ensure_header().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            header_line() + "\n"
        );
        file.ensure_header().unwrap();
        file.append(&row("one")).unwrap();
        TimingFile::new(&path).append(&row("two")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(text.matches("scheduled_at").count(), 1);

        // A file that exists but is empty (say, made by `touch`) is given the header too.
        let touched = dir.path().join("touched.tsv");
        File::create(&touched).unwrap();
        TimingFile::new(&touched).append(&row("one")).unwrap();
        let log = TimingFile::new(&touched).read().unwrap();
        assert_eq!((log.rows.len(), log.bad_lines.len()), (1, 0));
    }

    #[test]
    fn a_time_below_year_zero_in_utc_is_a_bad_line() {
        // Regression (fuzz/regressions/timing_reader): it parsed, then could not be written back.
        let line = "\t0000-01-01T00:00:00+23:59\t0000-01-01T00:00:00+23:59\t0\tschedule\ts\tc\tcycle\t1\tok\t\t\t";
        let log = TimingLog::parse(format!("{}\n{line}\n", HEADER.join("\t")).as_bytes());
        assert!(log.rows.is_empty());
        assert_eq!(log.bad_lines.len(), 1);
        assert!(
            log.bad_lines[0].reason.contains("outside the years"),
            "{:?}",
            log.bad_lines
        );
    }

    #[test]
    fn a_file_rotated_away_is_reopened_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let file = TimingFile::new(&path);
        file.append(&row("before")).unwrap();
        std::fs::rename(&path, dir.path().join("task_timing.tsv.1")).unwrap();
        std::thread::sleep(ROTATION_CHECK + std::time::Duration::from_millis(100));
        file.append(&row("after")).unwrap();
        let fresh = file.read().unwrap();
        assert_eq!(
            fresh.rows,
            vec![row("after")],
            "the new file gets the row, with a header"
        );
        assert!(fresh.bad_lines.is_empty());
        let old = TimingFile::new(dir.path().join("task_timing.tsv.1"))
            .read()
            .unwrap();
        assert_eq!(old.rows, vec![row("before")]);
    }

    #[test]
    fn torn_tail_is_terminated_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let file = TimingFile::new(&path);
        file.append_all(&[row("one"), row("two")]).unwrap();
        // A crash in the middle of a row.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2026-11-21T10:10:00.000Z\t2026-11-21T10:1")
            .unwrap();
        let torn = file.read().unwrap();
        assert_eq!(torn.rows.len(), 2);
        assert_eq!(torn.bad_lines.len(), 1);
        assert_eq!(torn.bad_lines[0].line, 4);
        assert!(torn.bad_lines[0].reason.contains("incomplete"));

        let new = row("three");
        file.append(&new).unwrap();
        let log = file.read().unwrap();
        assert_eq!(log.rows, vec![row("one"), row("two"), new]);
        assert_eq!(log.bad_lines.len(), 1);
        assert_eq!(log.bad_lines[0].line, 4);
        assert!(
            log.bad_lines[0].reason.contains("13"),
            "{:?}",
            log.bad_lines
        );
    }

    #[test]
    fn reader_skips_and_counts_bad_lines_with_their_numbers() {
        let good = String::from_utf8(encode(false, &[row("ok")])).unwrap();
        let bad_time = good.replacen("2026-11-21T10:00:03.120Z", "yesterday", 1);
        let bad_status = good.replacen("\tok\t", "\tfine\t", 1);
        let nan_cost = good.replacen("0.125", "NaN", 1);
        let text = format!(
            "{}\n{good}too\tfew\n\n{bad_time}{good}{bad_status}{nan_cost}",
            header_line()
        );
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe\n");
        bytes.extend_from_slice(good.as_bytes());
        let log = TimingLog::parse(&bytes);
        assert_eq!(log.rows, vec![row("ok"); 3]);
        let lines: Vec<usize> = log.bad_lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 5, 7, 8, 9], "{:#?}", log.bad_lines);
        assert!(log.bad_lines[0].reason.contains("found 2"));
        assert!(log.bad_lines[1].reason.contains("started_at"));
        assert!(log.bad_lines[2].reason.contains("status"));
        assert!(log.bad_lines[3].reason.contains("cost_usd"));
    }

    #[test]
    fn missing_header_is_a_bad_line_and_rows_are_still_read() {
        let good = String::from_utf8(encode(false, &[row("ok")])).unwrap();
        let log = TimingLog::parse(format!("scheduled_at\tstarted\n{good}{good}").as_bytes());
        assert_eq!(log.rows.len(), 2);
        assert_eq!(log.bad_lines.len(), 1);
        assert_eq!(log.bad_lines[0].line, 1);
        assert!(log.bad_lines[0].reason.contains("header"));
    }

    #[test]
    fn missing_file_reads_as_empty_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        assert_eq!(TimingFile::new(&path).read().unwrap(), TimingLog::default());
        TimingFile::new(&path).append_all(&[]).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn open_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("task_timing.tsv");
        let err = TimingFile::new(&path).append(&row("x")).unwrap_err();
        assert!(matches!(err, TimingError::Open { .. }));
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn appends_from_threads_never_interleave() {
        const WRITERS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let barrier = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let file = TimingFile::new(path);
                    barrier.wait();
                    append_as_writer(&file, w);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_every_writer_row_once(&path, WRITERS);
    }

    const CHILD_PATH: &str = "LO_TIMING_TEST_CHILD_PATH";
    const CHILD_WRITER: &str = "LO_TIMING_TEST_CHILD_WRITER";
    const CHILD_GO: &str = "LO_TIMING_TEST_CHILD_GO";

    /// The body of each child process of `appends_from_processes_never_interleave`;
    /// does nothing when run on its own.
    #[test]
    #[ignore = "run as a child process by appends_from_processes_never_interleave"]
    fn child_process_appender() {
        let Ok(path) = std::env::var(CHILD_PATH) else {
            return;
        };
        let writer: usize = std::env::var(CHILD_WRITER).unwrap().parse().unwrap();
        let go = PathBuf::from(std::env::var(CHILD_GO).unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        while !go.exists() {
            assert!(Instant::now() < deadline, "never told to go");
            std::thread::sleep(Duration::from_millis(2));
        }
        append_as_writer(&TimingFile::new(path), writer);
    }

    #[test]
    fn appends_from_processes_never_interleave() {
        const WRITERS: usize = 4;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("task_timing.tsv");
        let go = dir.path().join("go");
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..WRITERS)
            .map(|w| {
                Command::new(&exe)
                    .args([
                        "--ignored",
                        "--exact",
                        "timing::tests::child_process_appender",
                        "--test-threads=1",
                    ])
                    .env(CHILD_PATH, &path)
                    .env(CHILD_WRITER, w.to_string())
                    .env(CHILD_GO, &go)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // All children start appending at once, racing for the header.
        File::create(&go).unwrap();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_every_writer_row_once(&path, WRITERS);
    }
}
