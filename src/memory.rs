//! `persistent-memory.md`: the bounded memory the modes share (SPEC §5).
//!
//! The file is markdown with three `##` sections (Implementation Patterns, Commands,
//! System Updates). An *entry* is a top-level list item inside one of those sections,
//! with all its continuation lines and nested content. Everything else — the title,
//! any preamble, paragraphs, code blocks, other `##` sections and their lists — is
//! text this module never removes, and an unmodified document renders back to the
//! identical bytes.
//!
//! Rules this module owns:
//! - Parsing goes through pulldown-cmark, so a `- line` inside a fenced code block or
//!   an HTML block is text, not an entry. Section headings match case-insensitively.
//!   Files made only of headings, bullet items and their indented lines (what this
//!   module writes) take a line scan instead, which must find exactly what
//!   pulldown-cmark finds and leaves every other file to it (see `scan_lines`).
//! - Line endings are CommonMark's (`\n`, `\r\n`, a bare `\r`) wherever a span or a
//!   line count is computed, so spans agree with the parser's; only [`Entry::line`]
//!   counts `\n` alone, as `grep -n` does.
//! - `add` appends list items at the end of their sections (creating missing sections
//!   in canonical order); a multi-line text becomes `- first` plus lines indented by
//!   two spaces (a bare `\r` in it starts such a line too). The archive is written the
//!   same way; a first line of dashes takes `* `, since `- ---` is a thematic break.
//! - `prune` collapses entries that are identical apart from a leading RFC 3339
//!   timestamp to the newest copy, then removes the oldest entries (file order is age),
//!   System Updates before Commands before Implementation Patterns, until the file has
//!   at most `target_lines` lines. The result is parsed again before it is used: an
//!   entry whose removal would change how the rest parses (a paragraph turning into a
//!   setext heading, a list no longer interrupting a paragraph) is kept instead.
//! - Nothing is lost: every removed entry is appended to the archive and fsynced
//!   *before* the memory file is replaced (temp file, fsync, rename, directory fsync).
//!   A crash at any instant leaves each entry in the memory file, the archive, or both.
//! - An update that only adds text at the end of the file (the supervisor's System Updates
//!   entries, when that section is last) appends it in place, one write and one
//!   fdatasync, after checking that the file still holds what was read; a crash during
//!   that write leaves part of the new text, never loses old text.
//! - Every write holds an exclusive fd-lock on the lock file, and re-reads the memory
//!   file just before the rename: if someone edited it meanwhile, the update starts
//!   over from the new content (writers that do not take the lock, such as editors,
//!   can still race the final rename; the re-check narrows that window to microseconds).

use std::borrow::Cow;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::{self, IoSlice, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Title of the memory file, and the first line of [`initial_text`].
pub const TITLE: &str = "Persistent Memory";
/// Title of the archive file, written when the archive is created.
pub const ARCHIVE_TITLE: &str = "Persistent Memory Archive";
/// How often an update starts over because the file changed under it before giving up.
const MAX_ATTEMPTS: usize = 5;

/// One of the three sections that hold entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    ImplementationPatterns,
    Commands,
    SystemUpdates,
}

impl Section {
    /// Canonical file order.
    pub const ALL: [Section; 3] = [
        Section::ImplementationPatterns,
        Section::Commands,
        Section::SystemUpdates,
    ];

    /// The order in which entries are pruned: status noise first, hard-won patterns last.
    const PRUNE_ORDER: [Section; 3] = [
        Section::SystemUpdates,
        Section::Commands,
        Section::ImplementationPatterns,
    ];

    /// The position in [`Section::ALL`].
    fn index(self) -> usize {
        match self {
            Section::ImplementationPatterns => 0,
            Section::Commands => 1,
            Section::SystemUpdates => 2,
        }
    }

    /// The heading text, e.g. `"Implementation Patterns"`.
    pub fn title(self) -> &'static str {
        match self {
            Section::ImplementationPatterns => "Implementation Patterns",
            Section::Commands => "Commands",
            Section::SystemUpdates => "System Updates",
        }
    }

    /// The section a heading text names, ignoring case, `-`/`_` and extra spaces.
    fn from_title(text: &str) -> Option<Section> {
        let wanted: String = text
            .replace(['-', '_'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        Section::ALL
            .into_iter()
            .find(|s| s.title().to_lowercase() == wanted)
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

impl FromStr for Section {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Section::from_title(s).ok_or_else(|| MemoryError::UnknownSection {
            name: s.to_string(),
        })
    }
}

/// When to prune (`max_lines`) and how far (`target_lines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    pub max_lines: usize,
    pub target_lines: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_lines: 300,
            target_lines: 240,
        }
    }
}

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    pub lines_before: usize,
    pub lines_after: usize,
    /// Every entry moved to the archive, duplicates included.
    pub archived: usize,
    /// The archived entries whose key (the text without a leading timestamp, words
    /// spaced alike) stays in the file in another entry of their section: the collapsed
    /// duplicates. An older copy of an entry that was itself pruned for its age counts
    /// as pruned for age.
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source} (check that its directory is writable)")]
    Lock { path: PathBuf, source: io::Error },
    #[error(
        "{path} changed during each of {attempts} attempts to update it; \
         stop the other writer and retry"
    )]
    KeepsChanging { path: PathBuf, attempts: usize },
    #[error(
        "{path}: cannot append to section \"{section}\" without disturbing the entries \
         around it (an unclosed code fence or HTML block near that section?); \
         fix the markdown by hand"
    )]
    Layout { path: PathBuf, section: Section },
    #[error(
        "unknown memory section \"{name}\" \
         (expected one of: Implementation Patterns, Commands, System Updates)"
    )]
    UnknownSection { name: String },
}

/// The text of a new memory file: the title and the three empty sections.
pub fn initial_text() -> String {
    let mut text = format!("# {TITLE}\n");
    for section in Section::ALL {
        text.push_str(&format!("## {}\n", section.title()));
    }
    text
}

/// A comparable form of an entry's text: whitespace runs collapse to one space, so an
/// entry compares equal in the memory file and in the archive whatever its indentation.
pub fn entry_key(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !key.is_empty() {
            key.push(' ');
        }
        key.push_str(word);
    }
    key
}

/// Whether two texts have the same [`entry_key`], without building either.
fn same_key(a: &str, b: &str) -> bool {
    if is_own_key(a) && is_own_key(b) {
        return a == b;
    }
    a.split_whitespace().eq(b.split_whitespace())
}

/// The text without leading whitespace and a leading RFC 3339 timestamp token.
fn without_timestamp(text: &str) -> &str {
    let trimmed = text.trim_start();
    if let Some(len) = plain_timestamp_len(trimmed.as_bytes()) {
        // Usually one space: skipped without decoding characters.
        let rest = &trimmed[len..];
        let spaces = rest.bytes().take_while(|&b| b == b' ').count();
        return rest[spaces..].trim_start();
    }
    let token_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    let (token, rest) = trimmed.split_at(token_end);
    // Every RFC 3339 date-time starts with the year's digits; skip the parse otherwise.
    if token.starts_with(|c: char| c.is_ascii_digit())
        && DateTime::parse_from_rfc3339(token).is_ok()
    {
        rest.trim_start()
    } else {
        trimmed
    }
}

/// The length of the timestamp token `text` starts with, when that token has the plain
/// shape the supervisor writes, `YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM)`, and
/// chrono's RFC 3339 parse would accept it; `None` when only that parse can tell (any
/// other spelling: `t` or a space for `T`, `z`, a Unicode minus, a token followed by
/// non-ASCII whitespace; and fields out of the ranges checked here).
///
/// Written by hand because the parse dominated the dedupe of a large prune: it runs once
/// per entry, and chrono has no cheaper validity check. It only ever answers yes for a
/// token chrono accepts (`NaiveDate` itself judges the date, leap years included); every
/// other case goes to chrono, and `timestamp_shortcut_agrees_with_chrono` compares the
/// two on tricky tokens.
fn plain_timestamp_len(text: &[u8]) -> Option<usize> {
    let digit = |i: usize| -> Option<u32> {
        text.get(i)
            .filter(|b| b.is_ascii_digit())
            .map(|b| u32::from(b - b'0'))
    };
    let number = |at: usize| Some(digit(at)? * 10 + digit(at + 1)?);
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, b)| text.get(at) != Some(&b)) {
        return None;
    }
    let year = number(0)? * 100 + number(2)?;
    let (month, day) = (number(5)?, number(8)?);
    let (hour, minute, second) = (number(11)?, number(14)?, number(17)?);
    // A second of 60 is a leap second, which RFC 3339 (and chrono) accept at any time.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Every month of every year of four digits has 28 days; later days ask chrono.
    if !(1..=12).contains(&month)
        || day == 0
        || day > 28 && NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day).is_none()
    {
        return None;
    }
    let mut at = 19;
    if text.get(at) == Some(&b'.') {
        let digits = text[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        // chrono reads nine digits and skips the rest; longer fractions take the parse.
        if !(1..=9).contains(&digits) {
            return None;
        }
        at += 1 + digits;
    }
    match text.get(at)? {
        b'Z' => at += 1,
        b'+' | b'-' => {
            if text.get(at + 3) != Some(&b':') || number(at + 1)? > 23 || number(at + 4)? > 59 {
                return None;
            }
            at += 6;
        }
        _ => return None,
    }
    // The token ends here: at the end, or at ASCII whitespace (`char::is_whitespace`, the
    // token's end for the general path, also takes vertical tab and form feed).
    match text.get(at) {
        None => Some(at),
        Some(&b) if b.is_ascii() && char::from(b).is_whitespace() => Some(at),
        Some(_) => None,
    }
}

/// The key under which duplicates collapse: the section and the [`entry_key`] of
/// [`without_timestamp`], hashed and compared without building the key when the text
/// already is one.
struct DedupeKey<'a> {
    section: Section,
    text: &'a str,
    /// [`is_own_key`] of `text`, computed once.
    own: bool,
}

impl<'a> DedupeKey<'a> {
    fn new(section: Section, text: &'a str) -> Self {
        let text = without_timestamp(text);
        DedupeKey {
            section,
            text,
            own: is_own_key(text),
        }
    }
}

impl Hash for DedupeKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The key itself, hashed as a `str` either way: hashers need not be streaming,
        // so equal keys must reach the hasher cut the same way. Only keys that are not
        // their own text (several lines, extra spaces, non-ASCII) are built. The
        // section is left to `eq`: the same text in two sections is rare.
        if self.own {
            self.text.hash(state);
        } else {
            entry_key(self.text).hash(state);
        }
    }
}

impl PartialEq for DedupeKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.section == other.section
            && if self.own && other.own {
                self.text == other.text
            } else {
                same_key(self.text, other.text)
            }
    }
}

impl Eq for DedupeKey<'_> {}

/// A set of [`DedupeKey`]s, each hashed once.
///
/// foldhash rather than std's SipHash: a prune can hash every entry of a large file; its
/// seeds are random per process, so crafted entries cannot aim at collisions.
struct KeySet<'a> {
    state: foldhash::fast::SeedableRandomState,
    keys: hashbrown::HashTable<(u64, DedupeKey<'a>)>,
}

impl Default for KeySet<'_> {
    fn default() -> Self {
        KeySet {
            state: foldhash::fast::SeedableRandomState::random(),
            keys: hashbrown::HashTable::new(),
        }
    }
}

impl<'a> KeySet<'a> {
    fn contains(&self, key: &DedupeKey) -> bool {
        let hash = self.state.hash_one(key);
        self.keys
            .find(hash, |(h, k)| *h == hash && k == key)
            .is_some()
    }

    /// Adds `key`, which the set must not hold yet.
    fn insert(&mut self, key: DedupeKey<'a>) {
        let hash = self.state.hash_one(&key);
        self.keys.insert_unique(hash, (hash, key), |(h, _)| *h);
    }
}

/// Whether `text` is its own [`entry_key`]: printable ASCII words joined by single
/// spaces, which is cheaper to check than `split_whitespace` is to run.
///
/// This runs once per entry of the file in a prune, where folds over bytes and pairs of
/// neighbours compiled to scalar code a byte at a time. No crate checks this property,
/// so eight bytes are tested at a time in a `u64`, each test exact per byte (no carry
/// or borrow crosses a byte); `own_key_shortcuts_agree_with_the_general_code` compares
/// it with the definition at every position of texts up to three words long.
fn is_own_key(text: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    /// The high bit of each byte outside `' '..='~'`.
    fn outside(word: u64) -> u64 {
        let low = word & !HIGH;
        // For a byte below 0x80, adding 0x60 reaches its high bit from 0x20 up, adding
        // one from 0x7f up; a byte from 0x80 up is outside whatever the rest says.
        let from_space = (low + ONES * 0x60) & HIGH;
        let from_del = (low + ONES) & HIGH;
        (word & HIGH) | (!from_space & HIGH) | from_del
    }
    /// The high bit of each space.
    fn spaces(word: u64) -> u64 {
        let zero_where_space = word ^ (ONES * u64::from(b' '));
        let nonzero = ((zero_where_space & !HIGH) + !HIGH) | zero_where_space;
        !nonzero & HIGH
    }
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') {
        return false;
    }
    let mut chunks = bytes.chunks_exact(8);
    // Whether the byte before the current one is a space.
    let mut after_space = false;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of eight"));
        let spaces = spaces(word);
        // Little-endian: byte `i + 1` is eight bits above byte `i`.
        let doubled = spaces & ((spaces << 8) | u64::from(after_space) << 7);
        if outside(word) | doubled != 0 {
            return false;
        }
        after_space = spaces >> 63 != 0;
    }
    for &byte in chunks.remainder() {
        let space = byte == b' ';
        if byte.wrapping_sub(b' ') > b'~' - b' ' || space && after_space {
            return false;
        }
        after_space = space;
    }
    true
}

/// The positions of the `true`s.
fn indices(flags: &[bool]) -> Vec<usize> {
    (0..flags.len()).filter(|&i| flags[i]).collect()
}

/// Whether two sequences of pieces spell the same text, however they are cut.
fn same_concatenation<'a>(
    mut a: impl Iterator<Item = &'a str>,
    mut b: impl Iterator<Item = &'a str>,
) -> bool {
    let (mut x, mut y): (&[u8], &[u8]) = (b"", b"");
    loop {
        while x.is_empty() {
            match a.next() {
                Some(piece) => x = piece.as_bytes(),
                None => break,
            }
        }
        while y.is_empty() {
            match b.next() {
                Some(piece) => y = piece.as_bytes(),
                None => break,
            }
        }
        if x.is_empty() || y.is_empty() {
            return x.is_empty() && y.is_empty();
        }
        let n = x.len().min(y.len());
        if x[..n] != y[..n] {
            return false;
        }
        x = &x[n..];
        y = &y[n..];
    }
}

/// Every entry text recorded in an archive file, in file order.
pub fn archived_entries(archive_text: &str) -> Vec<String> {
    scan(archive_text)
        .items
        .into_iter()
        .map(|item| item.text.into_string(archive_text))
        .collect()
}

/// One entry of a parsed memory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: Section,
    /// The item's text without its list marker, continuation lines dedented.
    pub text: String,
    /// 1-based line of the item's marker, counting `\n` line endings.
    pub line: usize,
    /// Lines the item occupies (continuation lines included), counted like
    /// [`MemoryDoc::line_count`].
    pub lines: usize,
}

/// An entry as the document keeps it: its text where the document has it, and the
/// ranges a prune cuts.
#[derive(Debug, Clone)]
struct DocEntry {
    section: Section,
    text: ItemText,
    /// As [`Entry::line`].
    line: usize,
    /// Whole lines, from the marker's line to the last non-blank line.
    lines: Range<usize>,
    /// Bytes removed with the entry: its lines, plus the blank lines that separate it
    /// from the next item of the same list (so a loose list does not leave gaps).
    span: Range<usize>,
    /// Lines of `span`, counted like [`count_lines`].
    span_lines: usize,
}

/// An item's text. Most entries are one line, a marker, a space and the text: their
/// text is a slice of the document. A string per entry made parsing a file of a
/// hundred thousand entries allocate (and free) a hundred thousand times.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ItemText {
    /// The bytes of the document at this range.
    Slice(Range<usize>),
    /// Dedented from several lines, or trimmed.
    Owned(String),
}

impl ItemText {
    /// The text, given the document it came from.
    fn get<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            ItemText::Slice(range) => &text[range.clone()],
            ItemText::Owned(owned) => owned,
        }
    }

    fn into_string(self, text: &str) -> String {
        match self {
            ItemText::Slice(range) => text[range].to_string(),
            ItemText::Owned(owned) => owned,
        }
    }
}

/// A parsed memory file. It keeps the whole text; edits produce new text.
#[derive(Debug, Clone)]
pub struct MemoryDoc {
    text: String,
    entries: Vec<DocEntry>,
    headings: Vec<Heading>,
    /// [`count_lines`] of `text`, which the scan counts on its way.
    line_count: usize,
    /// The public form of `entries`, made on the first [`MemoryDoc::all_entries`]: the
    /// supervisor's reads and prunes never need it, and it takes a string per entry.
    public: OnceLock<Vec<Entry>>,
}

/// Everything else in a document follows from its text.
impl PartialEq for MemoryDoc {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for MemoryDoc {}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Heading {
    level: HeadingLevel,
    section: Option<Section>,
    /// From the start of the heading's first line to the end of its last line.
    lines: Range<usize>,
}

impl MemoryDoc {
    pub fn parse(text: &str) -> MemoryDoc {
        MemoryDoc::from_text(text.to_string())
    }

    fn from_text(text: String) -> MemoryDoc {
        let scanned = scan(&text);
        // The section of each item: that of the last `#` or `##` heading before it.
        let mut section = None;
        let mut pending = scanned.headings.iter();
        let mut seen = 0;
        let entries = scanned
            .items
            .into_iter()
            .filter_map(|item| {
                for heading in pending.by_ref().take(item.heading_count - seen) {
                    if heading.level <= HeadingLevel::H2 {
                        section = heading.section;
                    }
                }
                seen = item.heading_count;
                Some(DocEntry {
                    section: section?,
                    text: item.text,
                    line: item.line,
                    lines: item.lines,
                    span: item.span,
                    span_lines: item.span_lines,
                })
            })
            .collect();
        MemoryDoc {
            text,
            entries,
            headings: scanned.headings,
            line_count: scanned.line_count,
            public: OnceLock::new(),
        }
    }

    /// The document's text, unchanged by parsing.
    pub fn render(&self) -> String {
        self.text.clone()
    }

    /// The text of one of `entries`.
    fn entry_text<'a>(&'a self, entry: &'a DocEntry) -> &'a str {
        entry.text.get(&self.text)
    }

    /// The bytes of `entry`'s line when they are what [`write_entry`] makes of its text:
    /// a one-line entry, `- `, a text with nothing to trim at either end that does not
    /// start with a dash (so it is no line of dashes, which takes a `*`), and `\n`.
    fn verbatim_line(&self, entry: &DocEntry) -> Option<Range<usize>> {
        let ItemText::Slice(text) = &entry.text else {
            return None;
        };
        let bytes = self.text.as_bytes();
        let line = entry.lines.clone();
        let (first, last) = (
            *bytes.get(text.start)?,
            *bytes.get(text.end.checked_sub(1)?)?,
        );
        let plain = bytes[line.start] == b'-'
            && line.start + 2 == text.start
            && bytes[line.start + 1] == b' '
            && text.end + 1 == line.end
            && bytes[text.end] == b'\n'
            && first.is_ascii_graphic()
            && first != b'-'
            && last.is_ascii_graphic();
        plain.then_some(line)
    }

    pub fn line_count(&self) -> usize {
        self.line_count
    }

    /// The texts of a section's entries, oldest first.
    pub fn entries(&self, section: Section) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.section == section)
            .map(|e| self.entry_text(e).to_string())
            .collect()
    }

    /// Every entry of the three sections, in file order.
    pub fn all_entries(&self) -> &[Entry] {
        self.public.get_or_init(|| {
            self.entries
                .iter()
                .map(|e| Entry {
                    section: e.section,
                    text: self.entry_text(e).to_string(),
                    line: e.line,
                    lines: count_lines(&self.text[e.lines.clone()]),
                })
                .collect()
        })
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn has_section(&self, section: Section) -> bool {
        self.headings.iter().any(|h| h.section == Some(section))
    }

    /// The text with every entry removed: what pruning can never touch.
    pub fn skeleton(&self) -> String {
        self.skeleton_pieces().collect()
    }

    /// The text between the entries, in order.
    fn skeleton_pieces(&self) -> impl Iterator<Item = &str> {
        let mut at = 0;
        self.entries
            .iter()
            .map(|e| e.span.clone())
            .chain(std::iter::once(self.text.len()..self.text.len()))
            .map(move |span| {
                let piece = &self.text[at..span.start];
                at = span.end;
                piece
            })
    }

    /// The text without the entries at `removed` (indices into `entries`, ascending).
    fn without(&self, removed: &[usize]) -> String {
        let mut out = String::with_capacity(self.text.len());
        let mut at = 0;
        for &index in removed {
            let span = &self.entries[index].span;
            // Removed entries mostly adjoin: nothing lies between them.
            if span.start > at {
                out.push_str(&self.text[at..span.start]);
            }
            at = span.end;
        }
        out.push_str(&self.text[at..]);
        out
    }

    /// What [`MemoryStore::prune`] would do to this document, without touching a file:
    /// the same plan, new text and archive batch, minus the I/O.
    pub fn prune_dry_run(&self, limits: MemoryLimits, force: bool) -> PruneReport {
        prune_plan(self, limits, force).report
    }

    /// Which entries a prune removes (ascending), how many of them are duplicates (see
    /// [`PruneReport::duplicates`]), and the document left.
    ///
    /// Cutting entries out verbatim can change how the text left around them parses: a
    /// paragraph followed by `---` becomes a setext heading once the list between them
    /// is gone, and a list left starting at `3.` can no longer interrupt a paragraph, so
    /// its items become paragraph text. The plan is checked by parsing its result; if
    /// that moved any non-entry text or turned a kept entry into something else, the
    /// plan is made again one entry at a time, keeping every entry whose removal would.
    /// Keeping an entry never loses anything; the file may then end above the target.
    fn prune_plan(&self, lines: usize, target_lines: usize) -> (Vec<usize>, usize, MemoryDoc) {
        let removed = self.newest_that_fit(lines, target_lines);
        let removed_indices = indices(&removed);
        if let Ok(after) = self.keeping_layout(&removed_indices) {
            return (removed_indices, self.copies_of_kept(&removed), after);
        }
        let checked = self.choose_removals(lines, target_lines, |removed| {
            self.keeping_layout(&indices(removed)).is_ok()
        });
        tracing::warn!(
            planned = removed_indices.len(),
            removed = checked.iter().filter(|&&r| r).count(),
            "persistent memory: kept entries whose removal would change how the text \
             around them parses"
        );
        let after = MemoryDoc::from_text(self.without(&indices(&checked)));
        (indices(&checked), self.copies_of_kept(&checked), after)
    }

    /// The entries to remove when any may go: every older copy of a duplicate, then the
    /// oldest by section until the file, `lines` long now, has at most `target_lines`.
    ///
    /// That is what [`MemoryDoc::choose_removals`] does when every removal is allowed,
    /// computed from the other end. Removal in order stops as soon as the file fits, so
    /// what it keeps is the longest run of entries that are not older copies, counted back
    /// from the newest entry of the section pruned last, whose lines fit in what the rest
    /// of the file leaves. Walking newest first, an entry is an older copy exactly when its
    /// key was met before in its section, and the walk stops at the first entry that does
    /// not fit: a large file is mostly removed, and its removed entries are neither hashed
    /// nor compared. `the_newest_that_fit_are_what_removal_in_order_keeps` holds the two
    /// to the same result.
    fn newest_that_fit(&self, lines: usize, target_lines: usize) -> Vec<bool> {
        let entry_lines: usize = self.entries.iter().map(|e| e.span_lines).sum();
        // Lines left for entries once the rest of the file (headings, text) is counted.
        let mut budget = (target_lines + entry_lines).saturating_sub(lines);
        let mut removed = vec![true; self.entries.len()];
        let mut seen = KeySet::default();
        for section in Section::PRUNE_ORDER.into_iter().rev() {
            let newest_first = self.entries.iter().enumerate().rev();
            for (index, entry) in newest_first.filter(|(_, e)| e.section == section) {
                let key = DedupeKey::new(section, self.entry_text(entry));
                if seen.contains(&key) {
                    continue;
                }
                if entry.span_lines > budget {
                    return removed;
                }
                budget -= entry.span_lines;
                removed[index] = false;
                seen.insert(key);
            }
        }
        removed
    }

    /// Marks the entries to remove (duplicates, then the oldest by section until the
    /// file, `lines` long now, has at most `target_lines` lines), each only if `allowed`
    /// accepts the removals so far with it.
    fn choose_removals(
        &self,
        lines: usize,
        target_lines: usize,
        allowed: impl Fn(&[bool]) -> bool,
    ) -> Vec<bool> {
        let mut removed = vec![false; self.entries.len()];
        let try_remove = |removed: &mut Vec<bool>, index: usize| {
            removed[index] = true;
            let ok = allowed(removed);
            removed[index] = ok;
            ok
        };
        for (index, duplicate) in self.older_copies().into_iter().enumerate().rev() {
            if duplicate {
                try_remove(&mut removed, index);
            }
        }
        let span_lines = |index: usize| self.entries[index].span_lines;
        let mut lines = lines.saturating_sub(
            (0..removed.len())
                .filter(|&i| removed[i])
                .map(span_lines)
                .sum(),
        );
        let by_section = by_section(self, 0..self.entries.len());
        // An entry refused in one pass can become removable once later ones are gone
        // (all of `1. x` `2. y` can go where `1. x` alone cannot), so passes repeat
        // while they remove something and the file is still too long.
        loop {
            let mut progress = false;
            'outer: for section in Section::PRUNE_ORDER {
                for &index in &by_section[section.index()] {
                    if lines <= target_lines {
                        break 'outer;
                    }
                    if !removed[index] && try_remove(&mut removed, index) {
                        lines = lines.saturating_sub(span_lines(index));
                        progress = true;
                    }
                }
            }
            if !progress || lines <= target_lines {
                return removed;
            }
        }
    }

    /// For each entry, whether a later entry of its section has the same key (see
    /// [`DedupeKey`]): the copies a prune collapses.
    fn older_copies(&self) -> Vec<bool> {
        let mut seen = KeySet::default();
        let mut older = vec![false; self.entries.len()];
        for (index, entry) in self.entries.iter().enumerate().rev() {
            let key = DedupeKey::new(entry.section, self.entry_text(entry));
            if seen.contains(&key) {
                older[index] = true;
            } else {
                seen.insert(key);
            }
        }
        older
    }

    /// How many of the `removed` entries have the key (see [`DedupeKey`]) of an entry
    /// that stays. Only the sections that keep an entry are looked at: a prune of a large
    /// file keeps a few hundred lines, often in one section.
    fn copies_of_kept(&self, removed: &[bool]) -> usize {
        let mut kept = KeySet::default();
        let mut keeps = [false; 3];
        for (entry, _) in self.entries.iter().zip(removed).filter(|(_, r)| !**r) {
            keeps[entry.section.index()] = true;
            kept.insert(DedupeKey::new(entry.section, self.entry_text(entry)));
        }
        self.entries
            .iter()
            .zip(removed)
            .filter(|(entry, r)| **r && keeps[entry.section.index()])
            .filter(|(entry, _)| {
                kept.contains(&DedupeKey::new(entry.section, self.entry_text(entry)))
            })
            .count()
    }

    /// The document without the `removed` entries, if it parses as the same skeleton
    /// with exactly the other entries, in order, in the same sections.
    fn keeping_layout(&self, removed: &[usize]) -> Result<MemoryDoc, MemoryDoc> {
        let after = MemoryDoc::from_text(self.without(removed));
        let mut skipped = removed.iter().peekable();
        let mut kept = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| skipped.next_if_eq(&i).is_none())
            .map(|(_, e)| e);
        let same_entries = after.entries.len() + removed.len() == self.entries.len()
            && after.entries.iter().all(|a| {
                kept.next().is_some_and(|k| {
                    a.section == k.section && same_key(after.entry_text(a), self.entry_text(k))
                })
            });
        if same_entries && same_concatenation(after.skeleton_pieces(), self.skeleton_pieces()) {
            Ok(after)
        } else {
            Err(after)
        }
    }

    /// The document with `entries` appended to their sections, or the section whose
    /// insertion would not parse back as exactly the entries intended.
    fn with_added(&self, entries: &[(Section, String)]) -> Result<MemoryDoc, Section> {
        let mut doc = self.clone();
        for section in Section::ALL {
            let texts: Vec<&str> = entries
                .iter()
                .filter(|(s, _)| *s == section)
                .map(|(_, t)| t.as_str())
                .collect();
            if texts.is_empty() {
                continue;
            }
            let block: String = texts.iter().map(|t| format_entry(t)).collect();
            let mut expected: Vec<(Section, String)> = doc.keyed_entries();
            let (at, block) = doc.insertion(section, block);
            // The new keys follow every entry that starts before the insertion point.
            let insert_index = doc.entries.iter().filter(|e| e.span.start < at).count();
            for (offset, text) in texts.iter().enumerate() {
                expected.insert(insert_index + offset, (section, entry_key(text)));
            }
            // A bare list can be swallowed by a preceding HTML block; a blank line ends it.
            let attempts = [block.clone(), format!("\n{block}")];
            let next = attempts.iter().find_map(|block| {
                let mut text = doc.text.clone();
                text.insert_str(at, block);
                let next = MemoryDoc::parse(&text);
                (next.keyed_entries() == expected).then_some(next)
            });
            doc = next.ok_or(section)?;
        }
        Ok(doc)
    }

    fn keyed_entries(&self) -> Vec<(Section, String)> {
        self.entries
            .iter()
            .map(|e| (e.section, entry_key(self.entry_text(e))))
            .collect()
    }

    /// Where a block of list items for `section` goes, and the block with any heading
    /// or newline it needs there.
    fn insertion(&self, section: Section, block: String) -> (usize, String) {
        let text = &self.text;
        let newline_before = |at: usize| {
            if at > 0 && !text[..at].ends_with(['\n', '\r']) {
                "\n"
            } else {
                ""
            }
        };
        if let Some(position) = self
            .headings
            .iter()
            .rposition(|h| h.section == Some(section))
        {
            let heading = &self.headings[position];
            let section_end = self.headings[position + 1..]
                .iter()
                .find(|h| h.level <= HeadingLevel::H2)
                .map_or(text.len(), |h| h.lines.start);
            // After the section's last non-blank line, so trailing blank lines keep
            // separating it from the next heading.
            let at = last_content_end(text, heading.lines.end, section_end);
            return (at, format!("{}{block}", newline_before(at)));
        }
        let later = self
            .headings
            .iter()
            .filter(|h| h.section.is_some_and(|s| s > section))
            .map(|h| h.lines.start)
            .min();
        let at = later.unwrap_or(text.len());
        let block = format!("{}## {}\n{block}", newline_before(at), section.title());
        (at, block)
    }
}

/// The end of the last non-blank line in `text[from..to]`, or `from` if none.
fn last_content_end(text: &str, from: usize, to: usize) -> usize {
    match text[from..to].trim_end().len() {
        0 => from,
        len => line_end(text, from + len),
    }
}

/// Lines as `wc -l` counts them, plus a final unterminated line; a bare `\r` ends a
/// line too, as it does for the markdown parser.
fn count_lines(text: &str) -> usize {
    // Byte counts rather than `split_lines`: this runs over the whole file, and over
    // every entry, per prune.
    let bytes = text.as_bytes();
    let newlines = count_byte(bytes, b'\n');
    let bare_returns = if count_byte(bytes, b'\r') > 0 {
        let inner = bytes.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n');
        inner.count() + usize::from(bytes.ends_with(b"\r"))
    } else {
        0
    };
    let unterminated = !text.is_empty() && !text.ends_with(['\n', '\r']);
    newlines + bare_returns + usize::from(unterminated)
}

/// How many times `byte` occurs in `bytes`. Counts in `u8`s over chunks of 255 bytes,
/// which vectorizes where a `usize` count per byte does not.
fn count_byte(bytes: &[u8], byte: u8) -> usize {
    bytes
        .chunks(255)
        .map(|chunk| usize::from(chunk.iter().fold(0u8, |n, &b| n + u8::from(b == byte))))
        .sum()
}

/// A list item as it is written: `- first` and continuation lines indented by two.
fn format_entry(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    write_entry(&mut out, text);
    out
}

/// [`format_entry`], appended to `out`.
fn write_entry(out: &mut String, text: &str) {
    let first_end = line_end(text, 0);
    let first = text[..first_end].trim();
    // `- ---` would be a thematic break, not an item: such an entry takes a `*`.
    let dashes = !first.is_empty() && first.chars().all(|c| c == '-' || c.is_whitespace());
    out.push(if dashes { '*' } else { '-' });
    if !first.is_empty() {
        // Trimmed: whitespace after the marker would move the item's content column
        // (a tab to column 4), leaving lines indented by two outside the item.
        out.push(' ');
        out.push_str(first);
    }
    if first_end == text.len() {
        // One line: most entries.
        out.push('\n');
        return;
    }
    for line in split_lines(&text[first_end..]) {
        out.push('\n');
        if !line.trim().is_empty() {
            out.push_str("  ");
            out.push_str(line.trim_end());
        }
    }
    out.push('\n');
}

/// What a caller hands to `add`, made ready for [`format_entry`]: no surrounding blank
/// lines, no list marker of its own, and only `\n` line endings: a bare `\r` (which
/// markdown reads as a line ending) becomes a continuation line, so it cannot end the
/// item where the formatting does not expect. `None` for an empty text.
fn clean_entry(text: &str) -> Option<String> {
    let lines: Vec<&str> = split_lines(text).collect();
    let first = lines.iter().position(|l| !l.trim().is_empty())?;
    let last = lines.iter().rposition(|l| !l.trim().is_empty())?;
    let mut kept: Vec<String> = lines[first..=last].iter().map(|l| l.to_string()).collect();
    let head = kept[0].trim_start();
    kept[0] = head
        .strip_prefix("- ")
        .unwrap_or(head)
        .trim_start()
        .to_string();
    Some(kept.join("\n"))
}

#[derive(Debug)]
struct Scanned {
    headings: Vec<Heading>,
    items: Vec<Item>,
    /// [`count_lines`] of the text.
    line_count: usize,
}

impl Scanned {
    /// A comparable form: item texts as strings, however each path keeps them.
    fn resolved(&self, text: &str) -> (Vec<Heading>, Vec<ResolvedItem>, usize) {
        let items = self
            .items
            .iter()
            .map(|item| ResolvedItem {
                heading_count: item.heading_count,
                text: item.text.get(text).to_string(),
                line: item.line,
                lines: item.lines.clone(),
                span: item.span.clone(),
                span_lines: item.span_lines,
            })
            .collect();
        (self.headings.clone(), items, self.line_count)
    }
}

#[derive(Debug)]
struct Item {
    /// How many headings precede the item.
    heading_count: usize,
    text: ItemText,
    line: usize,
    /// Whole lines, from the marker's line to the last non-blank line.
    lines: Range<usize>,
    span: Range<usize>,
    /// Lines of `span`, counted like [`count_lines`].
    span_lines: usize,
}

/// An [`Item`] with its text, to compare the two scans.
#[derive(Debug, PartialEq, Eq)]
struct ResolvedItem {
    heading_count: usize,
    text: String,
    line: usize,
    lines: Range<usize>,
    span: Range<usize>,
    span_lines: usize,
}

/// The top-level headings and top-level list items of a markdown text: the line scan
/// when it can vouch for its answer, else the full parse.
fn scan(text: &str) -> Scanned {
    scan_lines(text).unwrap_or_else(|| scan_markdown(text))
}

/// The top-level headings and top-level list items of a markdown text, by pulldown-cmark.
fn scan_markdown(text: &str) -> Scanned {
    let mut headings: Vec<Heading> = Vec::new();
    let mut items: Vec<Item> = Vec::new();
    // Top-level items of the list being read, to extend spans over separating blanks.
    let mut list_items: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut heading: Option<(HeadingLevel, Range<usize>, String)> = None;
    let mut line_starts = LineIndex::new(text);
    let parser = Parser::new_ext(text, Options::empty()).into_offset_iter();
    for (event, range) in parser {
        match event {
            Event::Start(tag) => {
                match &tag {
                    Tag::Heading { level, .. } if depth == 0 => {
                        heading = Some((*level, range.clone(), String::new()));
                    }
                    // Items only occur in lists, so depth 1 means a top-level list.
                    Tag::Item if depth == 1 => {
                        let start = line_start(text, range.start);
                        list_items.push(items.len());
                        items.push(new_item(
                            text,
                            headings.len(),
                            line_starts.line_of(start),
                            start,
                            range.end.min(text.len()),
                        ));
                    }
                    _ => {}
                }
                depth += 1;
            }
            Event::End(tag_end) => {
                depth = depth.saturating_sub(1);
                match tag_end {
                    TagEnd::Heading(_) if depth == 0 => {
                        if let Some((level, range, title)) = heading.take() {
                            let lines =
                                line_start(text, range.start)..through_line_end(text, range.end);
                            headings.push(Heading {
                                level,
                                section: Section::from_title(&title),
                                lines,
                            });
                        }
                    }
                    TagEnd::List(_) if depth == 0 => end_list(text, &mut items, &mut list_items),
                    _ => {}
                }
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some((_, _, title)) = heading.as_mut() {
                    title.push_str(&t);
                }
            }
            _ => {}
        }
    }
    Scanned {
        headings,
        items,
        line_count: count_lines(text),
    }
}

/// A top-level item whose marker line starts at `start` and whose content ends at or
/// before `end` (trailing blank lines in `start..end` are not the item's).
fn new_item(text: &str, heading_count: usize, line: usize, start: usize, end: usize) -> Item {
    let end = last_content_end(text, start, end).max(line_end(text, start));
    Item {
        heading_count,
        text: ItemText::Owned(item_text(&text[start..end])),
        line,
        lines: start..end,
        span: start..end,
        span_lines: count_lines(&text[start..end]),
    }
}

/// Closes a top-level list: blank lines between two of its items belong to the earlier
/// item; after the last item they are the document's.
fn end_list(text: &str, items: &mut [Item], list_items: &mut Vec<usize>) {
    for pair in list_items.windows(2) {
        let next_start = items[pair[1]].lines.start;
        let item = &mut items[pair[0]];
        if next_start > item.span.end
            && text
                .get(item.span.end..next_start)
                .is_some_and(|gap| gap.trim().is_empty())
        {
            item.span.end = next_start;
            item.span_lines = count_lines(&text[item.span.clone()]);
        }
    }
    list_items.clear();
}

/// [`scan_markdown`] for the texts the memory file is made of, line by line; `None`
/// when the text holds anything this scan cannot vouch for.
///
/// Hand-written because pulldown-cmark cannot be told to skip inline parsing, and the
/// memory file can grow to hundreds of thousands of lines before a prune: parsing every
/// entry's emphasis and code spans only to throw them away dominated the prune. The
/// scan accepts only a grammar whose block structure it can decide exactly:
/// - blank lines (spaces only);
/// - ATX headings at column 0 (`#` to `######`, then a space or the end of the line)
///   whose text has no character with an inline meaning, so the text is the title;
/// - top-level bullet items at column 0: `-`, `*` or `+`, one space, then a non-space
///   (so continuation lines need two spaces, whatever the item holds), and not a
///   thematic break such as `* * *`;
/// - lines indented by two spaces or more inside an item: the item's, whatever they
///   are, since a container takes its indented lines before any block inside it can.
///
/// Anything else (a paragraph, a fence or HTML block at column 0, a block quote, a
/// setext underline, an ordered list, an empty item, a one-space indent, a lazy
/// continuation line, a tab, a `\r`, any other control character) sends the whole text
/// to [`scan_markdown`]. Items and lists close through the parser path's helpers
/// ([`new_item`], [`end_list`]; one-line items take a shortcut to what `new_item`
/// returns), and the unit tests and the `memory` fuzz target compare the two paths on
/// every text the scan accepts.
fn scan_lines(text: &str) -> Option<Scanned> {
    let bytes = text.as_bytes();
    // Without an early exit the check vectorizes; chunks keep the exit for long texts.
    let control = |chunk: &[u8]| {
        chunk
            .iter()
            .fold(false, |c, &b| c | (b < b' ' && b != b'\n'))
    };
    if bytes.chunks(4096).any(control) {
        return None;
    }
    let mut headings: Vec<Heading> = Vec::new();
    // At most one item per line; reserving that (pages are only touched when used)
    // spares growing a vector of a hundred thousand items by copies.
    let mut items: Vec<Item> = Vec::with_capacity(count_byte(bytes, b'\n') + 1);
    let mut list_items: Vec<usize> = Vec::new();
    // The open list's bullet; another bullet starts another list.
    let mut bullet = None;
    // The open item: its start, its line number, the end of its first line and the end
    // of its last non-blank line.
    let mut open: Option<(usize, usize, usize, usize)> = None;
    let close_item = |open: &mut Option<(usize, usize, usize, usize)>,
                      items: &mut Vec<Item>,
                      headings: &[Heading]| {
        let Some((start, line, first_end, end)) = open.take() else {
            return;
        };
        let single = text[start..end].strip_suffix('\n');
        let single = single.unwrap_or(&text[start..end]);
        // Most entries are one line, `- ` and an ASCII non-space: what `new_item` finds
        // without looking for line ends again (the differential tests cover both).
        if end == first_end && single.as_bytes().get(2).is_some_and(u8::is_ascii_graphic) {
            items.push(Item {
                heading_count: headings.len(),
                text: ItemText::Slice(start + 2..start + single.len()),
                line,
                lines: start..end,
                span: start..end,
                span_lines: 1,
            });
        } else {
            items.push(new_item(text, headings.len(), line, start, end));
        }
    };
    let mut line_number = 0;
    let mut at = 0;
    while at < text.len() {
        let end = memchr::memchr(b'\n', &bytes[at..]).map_or(text.len(), |i| at + i + 1);
        let line = text[at..end].strip_suffix('\n').unwrap_or(&text[at..end]);
        line_number += 1;
        let first = line.as_bytes().first().copied();
        match first {
            _ if line.bytes().all(|b| b == b' ') => {}
            Some(b' ') => {
                let indent = line.len() - line.trim_start_matches(' ').len();
                let (true, Some((_, _, _, item_end))) = (indent >= 2, open.as_mut()) else {
                    return None;
                };
                *item_end = end;
            }
            Some(b'#') => {
                let level = line.bytes().take_while(|&b| b == b'#').count();
                let rest = &line[level..];
                if level > 6 || !(rest.is_empty() || rest.starts_with(' ')) {
                    return None;
                }
                let title = atx_title(rest)?;
                close_item(&mut open, &mut items, &headings);
                end_list(text, &mut items, &mut list_items);
                bullet = None;
                headings.push(Heading {
                    level: HEADING_LEVELS[level - 1],
                    section: Section::from_title(title),
                    lines: at..end,
                });
            }
            Some(marker @ (b'-' | b'*' | b'+')) => {
                let content = line[1..].strip_prefix(' ')?;
                if content.is_empty() || content.starts_with(' ') {
                    return None;
                }
                let rule = marker != b'+'
                    && line.bytes().all(|b| b == marker || b == b' ')
                    && line.bytes().filter(|&b| b == marker).count() >= 3;
                if rule {
                    return None;
                }
                close_item(&mut open, &mut items, &headings);
                if bullet != Some(marker) {
                    end_list(text, &mut items, &mut list_items);
                    bullet = Some(marker);
                }
                list_items.push(items.len());
                open = Some((at, line_number, end, end));
            }
            _ => return None,
        }
        at = end;
    }
    close_item(&mut open, &mut items, &headings);
    end_list(text, &mut items, &mut list_items);
    // Lines end only at `\n` here, so the lines read are what `count_lines` counts.
    Some(Scanned {
        headings,
        items,
        line_count: line_number,
    })
}

/// For the `memory` fuzz target: `Ok(true)` when the line scan accepts `text` and finds
/// exactly what pulldown-cmark finds (headings, items, their texts, lines and spans),
/// `Ok(false)` when it leaves `text` to pulldown-cmark, and both answers otherwise.
#[doc(hidden)]
pub fn check_line_scan(text: &str) -> Result<bool, String> {
    let Some(lines) = scan_lines(text) else {
        return Ok(false);
    };
    let (lines, markdown) = (lines.resolved(text), scan_markdown(text).resolved(text));
    if lines == markdown {
        Ok(true)
    } else {
        Err(format!(
            "line scan:\n{lines:#?}\npulldown-cmark:\n{markdown:#?}"
        ))
    }
}

const HEADING_LEVELS: [HeadingLevel; 6] = [
    HeadingLevel::H1,
    HeadingLevel::H2,
    HeadingLevel::H3,
    HeadingLevel::H4,
    HeadingLevel::H5,
    HeadingLevel::H6,
];

/// The title of an ATX heading from what follows its `#`s, as pulldown-cmark's text
/// events spell it; `None` when inline parsing could make it differ (an escape, an
/// entity, emphasis, code, a link, raw HTML).
fn atx_title(rest: &str) -> Option<&str> {
    if rest.contains(['\\', '`', '*', '_', '&', '<', '>', '[', ']', '!', '~']) {
        return None;
    }
    let content = rest.trim_matches(' ');
    // An optional closing sequence: `#`s preceded by a space (or making up the whole).
    let unclosed = content.trim_end_matches('#');
    Some(if unclosed.is_empty() {
        unclosed
    } else if unclosed.len() < content.len() && unclosed.ends_with(' ') {
        unclosed.trim_end_matches(' ')
    } else {
        content
    })
}

/// The text of a list item without its marker, continuation lines dedented by the
/// marker's width (lazy continuation lines keep what they have).
fn item_text(raw: &str) -> String {
    let mut lines = split_lines(raw);
    let Some(first) = lines.next() else {
        return String::new();
    };
    let indent = first.len() - first.trim_start().len();
    let rest = &first[indent..];
    let marker = if rest.starts_with(['-', '*', '+']) {
        1
    } else {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits + usize::from(rest[digits..].starts_with(['.', ')']))
    };
    let after = &rest[marker..];
    let spaces = after.len() - after.trim_start_matches(' ').len();
    // Five or more spaces open indented code in the item: its content starts one in.
    let offset = match spaces {
        _ if after.trim().is_empty() => after.len(),
        5.. => 1,
        _ => spaces,
    };
    let width = indent + marker + offset.max(1);
    let mut out = after[offset..].to_string();
    for line in lines {
        out.push('\n');
        let leading = line.len() - line.trim_start_matches(' ').len();
        out.push_str(&line[leading.min(width)..]);
    }
    out
}

/// The start of the line containing byte `at`. Line endings are CommonMark's: `\n`,
/// `\r\n` and a bare `\r`, because that is where pulldown-cmark ends lines; an offset on
/// the `\n` of a `\r\n` belongs to the line that pair ends.
fn line_start(text: &str, at: usize) -> usize {
    let at = if text[..at].ends_with('\r') && text[at..].starts_with('\n') {
        at - 1
    } else {
        at
    };
    text[..at].rfind(['\n', '\r']).map_or(0, |i| i + 1)
}

/// The end of the line containing byte `at`, past its line ending.
fn line_end(text: &str, at: usize) -> usize {
    // Bytes, not chars: this runs once or more per line of the file.
    let bytes = text.as_bytes();
    match memchr::memchr2(b'\n', b'\r', &bytes[at..]) {
        Some(i) if bytes[at + i..].starts_with(b"\r\n") => at + i + 2,
        Some(i) => at + i + 1,
        None => text.len(),
    }
}

/// `end` moved past the rest of its line, unless it already ends one.
fn through_line_end(text: &str, end: usize) -> usize {
    if end == 0 || text[..end].ends_with('\n') {
        end
    } else if text[..end].ends_with('\r') {
        // Past the `\n` of a `\r\n`, so a heading never ends between the two.
        end + usize::from(text[end..].starts_with('\n'))
    } else {
        line_end(text, end)
    }
}

/// The lines of `text` without their endings, split where [`line_start`] splits them;
/// like [`str::lines`], a final line ending does not start another line.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = line_end(rest, 0);
        let line = &rest[..end - line_ending_len(&rest[..end])];
        rest = &rest[end..];
        Some(line)
    })
}

/// The length of the line ending at the end of `line`: 2 for `\r\n`, 1 for `\n` or
/// `\r`, 0 for none.
fn line_ending_len(line: &str) -> usize {
    if line.ends_with("\r\n") {
        2
    } else {
        usize::from(line.ends_with(['\n', '\r']))
    }
}

/// Line numbers for byte offsets that arrive in ascending order. They count `\n` only,
/// as `grep -n`, `sed` and editors in Unix mode number lines, so a stray `\r` does not
/// shift the number a person looks the entry up by.
struct LineIndex<'a> {
    text: &'a str,
    at: usize,
    line: usize,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            at: 0,
            line: 1,
        }
    }

    fn line_of(&mut self, offset: usize) -> usize {
        if offset < self.at {
            self.at = 0;
            self.line = 1;
        }
        self.line += self.text[self.at..offset].matches('\n').count();
        self.at = offset;
        self.line
    }
}

/// The memory file, its archive and its lock, and the updates that keep them consistent.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    memory: PathBuf,
    archive: PathBuf,
    lock: PathBuf,
    /// Test seam: runs after the temp file is written, before the re-check.
    #[cfg(test)]
    before_replace: Option<fn(&Path, usize)>,
}

/// What one pass of an update decided, possibly borrowing from the document it read.
struct Plan<'a> {
    /// The new memory text, `None` to leave the file as it is.
    text: Option<String>,
    /// Entries to append to the archive before the memory file is replaced, formatted
    /// and grouped under `### Section` headings, in pieces to write one after the other
    /// (see [`archive_batch`]); none for no entries. `report.archived` counts them.
    archive: Vec<Cow<'a, str>>,
    report: PruneReport,
}

impl Plan<'_> {
    fn into_owned(self) -> Plan<'static> {
        Plan {
            text: self.text,
            archive: self
                .archive
                .into_iter()
                .map(|piece| Cow::Owned(piece.into_owned()))
                .collect(),
            report: self.report,
        }
    }
}

impl MemoryStore {
    pub fn new(memory: PathBuf, archive: PathBuf, lock: PathBuf) -> Self {
        MemoryStore {
            memory,
            archive,
            lock,
            #[cfg(test)]
            before_replace: None,
        }
    }

    /// The store at the instance directory's standard paths (SPEC §1).
    pub fn in_dir(dir: &Path) -> Self {
        MemoryStore::new(
            dir.join("persistent-memory.md"),
            dir.join("persistent-memory.archive.md"),
            dir.join(".loop-orchestrator").join("memory.lock"),
        )
    }

    pub fn memory_path(&self) -> &Path {
        &self.memory
    }

    pub fn archive_path(&self) -> &Path {
        &self.archive
    }

    /// The memory file as it is now; a missing file reads as [`initial_text`]. Readers
    /// need no lock: writers only ever replace the file by rename.
    pub fn read(&self) -> Result<MemoryDoc, MemoryError> {
        let text = read_optional(&self.memory)?.unwrap_or_else(initial_text);
        Ok(MemoryDoc::from_text(text))
    }

    /// Appends entries at the end of their sections. Empty texts are skipped.
    pub fn add(&self, entries: &[(Section, String)]) -> Result<(), MemoryError> {
        let entries = clean_entries(entries);
        if entries.is_empty() {
            return Ok(());
        }
        self.update(|current| {
            let text = self.added(&or_initial(current), &entries)?.render();
            Ok(Plan {
                report: PruneReport {
                    lines_before: count_lines(&text),
                    lines_after: count_lines(&text),
                    ..PruneReport::default()
                },
                text: Some(text),
                archive: Vec::new(),
            })
        })
        .map(|_| ())
    }

    /// Prunes when the file has more than `max_lines` lines (always when `force`),
    /// down to `target_lines`.
    pub fn prune(&self, limits: MemoryLimits, force: bool) -> Result<PruneReport, MemoryError> {
        self.update(|current| {
            let Some(current) = current else {
                return Ok(Plan {
                    text: None,
                    archive: Vec::new(),
                    report: PruneReport::default(),
                });
            };
            Ok(prune_plan(current, limits, force))
        })
    }

    /// Adds entries and prunes if the result is over `max_lines`, in one update (one
    /// rename). Without a prune the report's two line counts are the file after adding.
    pub fn add_and_prune(
        &self,
        entries: &[(Section, String)],
        limits: MemoryLimits,
    ) -> Result<PruneReport, MemoryError> {
        let entries = clean_entries(entries);
        self.update(|current| {
            let doc = or_initial(current);
            let doc = if entries.is_empty() {
                doc
            } else {
                Cow::Owned(self.added(&doc, &entries)?)
            };
            let mut plan = match &doc {
                Cow::Borrowed(doc) => prune_plan(doc, limits, false),
                Cow::Owned(doc) => prune_plan(doc, limits, false).into_owned(),
            };
            if plan.text.is_none() && !entries.is_empty() {
                plan.text = Some(doc.render());
            }
            Ok(plan)
        })
    }

    fn added(
        &self,
        doc: &MemoryDoc,
        entries: &[(Section, String)],
    ) -> Result<MemoryDoc, MemoryError> {
        doc.with_added(entries)
            .map_err(|section| MemoryError::Layout {
                path: self.memory.clone(),
                section,
            })
    }

    /// Read, plan, archive, replace: under the lock, starting over when the memory
    /// file changed between the read and the replace. `decide` gets the file parsed,
    /// `None` when there is none.
    fn update(
        &self,
        mut decide: impl for<'d> FnMut(Option<&'d MemoryDoc>) -> Result<Plan<'d>, MemoryError>,
    ) -> Result<PruneReport, MemoryError> {
        if let Some(parent) = self.lock.parent() {
            fs::create_dir_all(parent).map_err(|source| MemoryError::Lock {
                path: self.lock.clone(),
                source,
            })?;
        }
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|source| MemoryError::Lock {
                path: self.lock.clone(),
                source,
            })?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _guard = lock.write().map_err(|source| MemoryError::Lock {
            path: self.lock.clone(),
            source,
        })?;
        // Holding the lock, no other store is between its temp write and its rename:
        // any temp file left is from a writer that died.
        self.remove_stale_temps();

        for attempt in 0..MAX_ATTEMPTS {
            // Parsed in place: the text is the document's, not a copy of a file that can
            // be megabytes.
            let current = read_optional(&self.memory)?.map(MemoryDoc::from_text);
            let plan = decide(current.as_ref())?;
            let original = current.as_ref().map(|doc| doc.text.as_str());
            let archive = || -> Result<(), MemoryError> {
                if !plan.archive.is_empty() {
                    append_archive(&self.archive, plan.report.archived, &plan.archive)?;
                    tracing::info!(
                        archive = %self.archive.display(),
                        entries = plan.report.archived,
                        "archived pruned memory entries"
                    );
                }
                Ok(())
            };
            let text = match &plan.text {
                Some(text) if original != Some(text.as_str()) => text,
                _ => {
                    archive()?;
                    return Ok(plan.report);
                }
            };
            // Entries added at the end of the file, nothing removed: appended in place.
            if plan.archive.is_empty()
                && let Some(original) = original
                && text.len() > original.len()
                && text.starts_with(original)
            {
                #[cfg(test)]
                if let Some(hook) = self.before_replace {
                    hook(&self.memory, attempt);
                }
                if self.append_if_unchanged(original, &text[original.len()..])? {
                    return Ok(plan.report);
                }
                tracing::warn!(
                    file = %self.memory.display(),
                    attempt,
                    "memory file changed while it was being updated; starting over"
                );
                continue;
            }
            let temp = if plan.archive.is_empty() {
                self.write_temp(text)?
            } else {
                // The archive batch and the new file are independent until the rename:
                // both are written and flushed side by side, and both are durable before
                // it, which is the order SPEC §5 asks for. A prune waits for one flush
                // instead of two (figure 4 in BENCHMARKS.md).
                std::thread::scope(|scope| {
                    let archiving = scope.spawn(archive);
                    let temp = self.write_temp(text);
                    let archived = archiving
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    match (archived, temp) {
                        (Ok(()), temp) => temp,
                        (Err(e), Ok(temp)) => {
                            let _ = fs::remove_file(&temp);
                            Err(e)
                        }
                        (Err(e), Err(_)) => Err(e),
                    }
                })?
            };
            #[cfg(test)]
            if let Some(hook) = self.before_replace {
                hook(&self.memory, attempt);
            }
            if !file_holds(&self.memory, original)? {
                let _ = fs::remove_file(&temp);
                tracing::warn!(
                    file = %self.memory.display(),
                    attempt,
                    "memory file changed while it was being updated; starting over"
                );
                continue;
            }
            fs::rename(&temp, &self.memory).map_err(|source| {
                let _ = fs::remove_file(&temp);
                MemoryError::Write {
                    path: self.memory.clone(),
                    source,
                }
            })?;
            sync_parent(&self.memory)?;
            return Ok(plan.report);
        }
        Err(MemoryError::KeepsChanging {
            path: self.memory.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Appends `suffix` to the memory file if it still holds exactly `original`: one write
    /// and one fdatasync, where a replacement costs a temp file, its fsync, a rename and a
    /// directory fsync (figure 5 in BENCHMARKS.md: the cycle's System Updates entries go
    /// at the end of the file). `false`, with the file as it was, when it changed since it
    /// was read or was replaced while this wrote; the caller starts over. A crash during
    /// the write leaves a part of the suffix: text, never a lost entry of the original.
    fn append_if_unchanged(&self, original: &str, suffix: &str) -> Result<bool, MemoryError> {
        use std::os::unix::fs::MetadataExt;
        let write_error = |source| MemoryError::Write {
            path: self.memory.clone(),
            source,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.memory)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(write_error(source)),
        };
        if !reads_as(&mut file, original.as_bytes()).unwrap_or(false) {
            return Ok(false);
        }
        if let Err(source) = file.write_all(suffix.as_bytes()) {
            // Nothing half-written stays behind: the entries are retried whole.
            let _ = file.set_len(original.len() as u64);
            return Err(write_error(source));
        }
        file.sync_data().map_err(write_error)?;
        // An editor that replaced the file by rename meanwhile has our lines in the old
        // inode, not at the path.
        let ours = file.metadata().map_err(write_error)?;
        Ok(fs::metadata(&self.memory)
            .is_ok_and(|at_path| (at_path.dev(), at_path.ino()) == (ours.dev(), ours.ino())))
    }

    fn temp_prefix(&self) -> String {
        let name = self
            .memory
            .file_name()
            .map_or_else(|| "memory".into(), |n| n.to_string_lossy().into_owned());
        format!(".{name}.tmp-")
    }

    /// Writes and fsyncs `text` to a new temp file next to the memory file.
    fn write_temp(&self, text: &str) -> Result<PathBuf, MemoryError> {
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let temp = self.memory.with_file_name(format!(
            "{}{}-{stamp}",
            self.temp_prefix(),
            std::process::id()
        ));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            if let Ok(meta) = fs::metadata(&self.memory) {
                file.set_permissions(meta.permissions())?;
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp);
            MemoryError::Write {
                path: temp.clone(),
                source,
            }
        })?;
        Ok(temp)
    }

    fn remove_stale_temps(&self) {
        let dir = match self.memory.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let prefix = self.temp_prefix();
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        for entry in listing.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::debug!(file = %entry.path().display(), "removing stale memory temp file");
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The document `update` found, or a new file's when there was none.
fn or_initial(current: Option<&MemoryDoc>) -> Cow<'_, MemoryDoc> {
    current.map_or_else(
        || Cow::Owned(MemoryDoc::from_text(initial_text())),
        Cow::Borrowed,
    )
}

fn clean_entries(entries: &[(Section, String)]) -> Vec<(Section, String)> {
    entries
        .iter()
        .filter_map(|(s, t)| clean_entry(t).map(|t| (*s, t)))
        .collect()
}

/// The plan for pruning `doc`: nothing when it is within `max_lines` and not forced.
fn prune_plan(doc: &MemoryDoc, limits: MemoryLimits, force: bool) -> Plan<'_> {
    let lines_before = doc.line_count();
    if !force && lines_before <= limits.max_lines {
        return Plan {
            text: None,
            archive: Vec::new(),
            report: PruneReport {
                lines_before,
                lines_after: lines_before,
                ..PruneReport::default()
            },
        };
    }
    let (removed, duplicates, after) = doc.prune_plan(lines_before, limits.target_lines);
    let archive = archive_batch(doc, &removed);
    let lines_after = after.line_count();
    tracing::info!(
        lines_before,
        lines_after,
        archived = removed.len(),
        duplicates,
        "pruned persistent memory"
    );
    Plan {
        report: PruneReport {
            lines_before,
            lines_after,
            archived: removed.len(),
            duplicates,
        },
        text: Some(after.text),
        archive,
    }
}

/// The `indices` of `doc`'s entries in three lists, one per section in [`Section::ALL`]
/// order: one pass over the entries rather than one per section.
fn by_section(doc: &MemoryDoc, indices: impl Iterator<Item = usize>) -> [Vec<usize>; 3] {
    let mut groups: [Vec<usize>; 3] = Default::default();
    for index in indices {
        groups[doc.entries[index].section.index()].push(index);
    }
    groups
}

/// The archive batch for the `removed` entries of `doc` (ascending indices): grouped by
/// section in canonical order, file order (age) within each, each entry as
/// [`write_entry`] formats it, in pieces to write one after the other.
///
/// An entry whose line in the file is already what `write_entry` makes of it (see
/// [`MemoryDoc::verbatim_line`]) is that line of the document, and lines that adjoin
/// in the file make one piece: pruning a large file archives megabytes of such lines,
/// and copying them into a new string only to write it out cost more than the write.
fn archive_batch<'a>(doc: &'a MemoryDoc, removed: &[usize]) -> Vec<Cow<'a, str>> {
    enum Piece {
        Doc(Range<usize>),
        Formatted(String),
    }
    let mut pieces: Vec<Piece> = Vec::new();
    /// The formatted piece at the end, started if there is none.
    fn formatted(pieces: &mut Vec<Piece>) -> &mut String {
        if !matches!(pieces.last(), Some(Piece::Formatted(_))) {
            pieces.push(Piece::Formatted(String::new()));
        }
        match pieces.last_mut() {
            Some(Piece::Formatted(text)) => text,
            _ => unreachable!("a formatted piece was just pushed"),
        }
    }
    for (section, group) in Section::ALL
        .into_iter()
        .zip(by_section(doc, removed.iter().copied()))
    {
        if !group.is_empty() {
            formatted(&mut pieces).push_str(&format!("### {}\n", section.title()));
        }
        for entry in group.into_iter().map(|i| &doc.entries[i]) {
            match (doc.verbatim_line(entry), pieces.last_mut()) {
                (Some(line), Some(Piece::Doc(run))) if run.end == line.start => run.end = line.end,
                (Some(line), _) => pieces.push(Piece::Doc(line)),
                (None, _) => write_entry(formatted(&mut pieces), doc.entry_text(entry)),
            }
        }
    }
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Doc(range) => Cow::Borrowed(&doc.text[range]),
            Piece::Formatted(text) => Cow::Owned(text),
        })
        .collect()
}

/// Whether the file at `path` holds exactly `expected` (`None`: there is no file).
/// Compared as it is read, rather than read whole into a new string: this runs before
/// every replace, over a file that can be megabytes.
fn file_holds(path: &Path, expected: Option<&str>) -> Result<bool, MemoryError> {
    let error = |source| MemoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(expected.is_none()),
        Err(source) => return Err(error(source)),
    };
    let Some(expected) = expected else {
        return Ok(false);
    };
    // A regular file of another size differs without reading it.
    let meta = file.metadata().map_err(error)?;
    if meta.is_file() && meta.len() != expected.len() as u64 {
        return Ok(false);
    }
    reads_as(&mut file, expected.as_bytes()).map_err(error)
}

/// Whether reading `file` from where it is to its end gives exactly `expected`.
fn reads_as(file: &mut File, expected: &[u8]) -> io::Result<bool> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut rest = expected;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(rest.is_empty());
        }
        match rest.strip_prefix(&buffer[..n]) {
            Some(after) => rest = after,
            None => return Ok(false),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, MemoryError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MemoryError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Appends one batch of `count` formatted entries under a `## Pruned` heading, and
/// fsyncs it (and the directory when the archive is new).
fn append_archive(path: &Path, count: usize, entries: &[Cow<str>]) -> Result<(), MemoryError> {
    let error = |source| MemoryError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(error)?;
    let is_new = file.metadata().map_err(error)?.len() == 0;
    let mut heading = String::new();
    if is_new {
        heading.push_str(&format!("# {ARCHIVE_TITLE}\n"));
    }
    // The leading newline also terminates a line torn by a crash during a past append.
    heading.push_str(&format!(
        "\n## Pruned {} ({count} entries)\n",
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    ));
    // Written from where the pieces are rather than copied into one buffer of what can
    // be megabytes; a crash during the writes is the torn append the next batch's
    // leading newline already handles.
    let mut slices: Vec<IoSlice> = std::iter::once(heading.as_str())
        .chain(entries.iter().map(|piece| &**piece))
        .map(|piece| IoSlice::new(piece.as_bytes()))
        .collect();
    write_all_vectored(&mut file, &mut slices).map_err(error)?;
    file.sync_all().map_err(error)?;
    if is_new {
        sync_parent(path)?;
    }
    Ok(())
}

/// `Write::write_all_vectored`, which is not stable yet: writes every slice, in order,
/// in as few calls as the system takes.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole archive batch",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, so a rename or creation in it is durable.
fn sync_parent(path: &Path) -> Result<(), MemoryError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| MemoryError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const TRICKY: &str = "# Persistent Memory\n\
Preamble paragraph that is\nnot an entry.\n\
\n\
## implementation patterns\n\
- first pattern\n  continued line\n  - nested item\n\n    indented para of nested\n\
- second pattern\nlazy continuation\n\
\n\
```\n- fenced, not an entry\n```\n\
\n\
<div>\n- html block, not an entry\n</div>\n\
\n\
## Notes\n\
- kept note\n\
\n\
Commands\n--------\n\
1. ordered entry\n\
2) other ordered\n\
\n\
## SYSTEM UPDATES ##\n\
- loose one\n\
\n\
- loose two\n\
### Sub heading\n\
* star entry without newline";

    fn store(dir: &Path) -> MemoryStore {
        MemoryStore::in_dir(dir)
    }

    #[test]
    fn parse_render_identity_on_tricky_input() {
        let doc = MemoryDoc::parse(TRICKY);
        assert_eq!(doc.render(), TRICKY);
        assert_eq!(doc.line_count(), TRICKY.lines().count());
        assert_eq!(
            doc.entries(Section::ImplementationPatterns),
            [
                "first pattern\ncontinued line\n- nested item\n\n  indented para of nested",
                "second pattern\nlazy continuation",
            ]
        );
        assert_eq!(
            doc.entries(Section::Commands),
            ["ordered entry", "other ordered"]
        );
        assert_eq!(
            doc.entries(Section::SystemUpdates),
            ["loose one", "loose two", "star entry without newline"]
        );
        assert_eq!(doc.entry_count(), 7);
        let lines: Vec<usize> = doc.all_entries().iter().map(|e| e.line).collect();
        assert_eq!(lines, [6, 11, 27, 28, 31, 33, 35]);
        assert!(Section::ALL.iter().all(|s| doc.has_section(*s)));
    }

    #[test]
    fn multibyte_text_at_line_ends_parses_and_prunes() {
        let text = "# Persistent Memory\n## Commands\n- caf\u{e9}\n## Syst\u{e8}me\n- kept \u{1f600}\n## System Updates\n- \u{e9}t\u{e9}";
        let doc = MemoryDoc::parse(text);
        assert_eq!(doc.render(), text);
        assert_eq!(doc.entries(Section::SystemUpdates), ["\u{e9}t\u{e9}"]);
        let heading_last = "## Commands\n- a\n## Not\u{e9}";
        let doc_heading_last = MemoryDoc::parse(heading_last);
        assert_eq!(doc_heading_last.render(), heading_last);
        assert_eq!(doc_heading_last.skeleton(), "## Commands\n## Not\u{e9}");
        let plan = forced_prune(&doc, 0);
        assert_eq!(
            plan.text.as_deref(),
            Some(
                "# Persistent Memory\n## Commands\n## Syst\u{e8}me\n- kept \u{1f600}\n## System Updates\n"
            )
        );
    }

    #[test]
    fn list_lines_in_code_and_html_are_not_entries() {
        let text = "# Persistent Memory\n## System Updates\n```\n- a\n- b\n```\n~~~md\n- c\n~~~\n    - indented code\n";
        let doc = MemoryDoc::parse(text);
        assert_eq!(doc.entry_count(), 0);
        let pruned = forced_prune(&doc, 0);
        assert_eq!(pruned.text.as_deref(), Some(text));
        assert!(pruned.archive.is_empty());
        assert!(pruned.archive.concat().is_empty());
    }

    #[test]
    fn skeleton_keeps_every_non_entry_byte() {
        let doc = MemoryDoc::parse(TRICKY);
        let skeleton = doc.skeleton();
        for kept in [
            "# Persistent Memory\nPreamble paragraph that is\nnot an entry.\n\n## implementation patterns\n",
            "```\n- fenced, not an entry\n```\n\n<div>\n- html block, not an entry\n</div>\n\n## Notes\n- kept note\n\nCommands\n--------\n",
            "## SYSTEM UPDATES ##\n",
            "### Sub heading\n",
        ] {
            assert!(
                skeleton.contains(kept),
                "{kept:?} missing from {skeleton:?}"
            );
        }
        assert!(MemoryDoc::parse(&skeleton).entry_count() == 0);
        // The loose list's separating blank line went with its first item.
        assert!(skeleton.contains("## SYSTEM UPDATES ##\n### Sub heading\n"));
    }

    #[test]
    fn entries_outside_the_three_sections_are_never_pruned() {
        let text = "# Persistent Memory\n- top item\n## Other\n- other 1\n- other 2\n## Commands\n- c1\n# Another Title\n- under h1\n## System Updates\n- s1\n";
        let doc = MemoryDoc::parse(text);
        assert_eq!(doc.entry_count(), 2);
        let plan = forced_prune(&doc, 0);
        assert_eq!(
            plan.text.as_deref(),
            Some(
                "# Persistent Memory\n- top item\n## Other\n- other 1\n- other 2\n## Commands\n# Another Title\n- under h1\n## System Updates\n"
            )
        );
    }

    #[test]
    fn prune_removes_oldest_system_updates_then_commands_then_patterns() {
        let text = "# Persistent Memory\n## Implementation Patterns\n- p1\n- p2\n## Commands\n- c1\n- c2\n## System Updates\n- s1\n- s2\n- s3\n";
        let doc = MemoryDoc::parse(text);
        let lines = doc.line_count();
        assert_eq!(lines, 11);
        let order: Vec<String> = (1..=7)
            .map(|n| {
                let plan = forced_prune(&doc, lines - n);
                let after = MemoryDoc::parse(plan.text.as_deref().unwrap());
                let kept: HashSet<String> =
                    after.all_entries().iter().map(|e| e.text.clone()).collect();
                assert_eq!(plan.report.lines_after, lines - n);
                assert_eq!(plan.report.archived, n);
                let gone: Vec<String> = doc
                    .all_entries()
                    .iter()
                    .map(|e| e.text.clone())
                    .filter(|t| !kept.contains(t))
                    .collect();
                assert_eq!(gone.len(), n);
                gone.join(",")
            })
            .collect();
        assert_eq!(order[6], "p1,p2,c1,c2,s1,s2,s3");
        assert_eq!(order[0], "s1");
        assert_eq!(order[2], "s1,s2,s3");
        assert_eq!(order[3], "c1,s1,s2,s3");
        assert_eq!(order[5], "p1,c1,c2,s1,s2,s3");
    }

    #[test]
    fn prune_reaches_target_and_waits_for_max() {
        let mut text = initial_text();
        for n in 0..400 {
            text.push_str(&format!("- update {n}\n  second line {n}\n"));
        }
        let doc = MemoryDoc::parse(&text);
        let limits = MemoryLimits::default();
        assert!(prune_plan(&doc, limits, false).report.lines_after <= 240);
        let small =
            MemoryDoc::parse(&initial_text().replace("## Commands\n", "## Commands\n- x\n- x\n"));
        let plan = prune_plan(&small, limits, false);
        assert!(plan.text.is_none(), "under max_lines nothing is pruned");
        let plan = prune_plan(&small, limits, true);
        assert_eq!(
            plan.report.duplicates, 1,
            "a forced prune still collapses duplicates"
        );
    }

    /// The plan of a forced prune of `doc` down to `target_lines`.
    fn forced_prune(doc: &MemoryDoc, target_lines: usize) -> Plan<'_> {
        let limits = MemoryLimits {
            max_lines: 0,
            target_lines,
        };
        prune_plan(doc, limits, true)
    }

    /// A memory file of `count` entries drawn from a few texts, so that many are copies,
    /// in all three sections (some repeated), some with timestamps or a second line, some
    /// in loose lists.
    fn shuffled_memory(seed: u64, count: usize) -> String {
        let mut state = seed;
        let mut next = |below: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % below
        };
        let mut text = String::from("# Persistent Memory\nSome notes.\n");
        for _ in 0..count {
            if next(8) == 0 {
                let section = Section::ALL[next(3) as usize];
                text.push_str(&format!("## {}\n", section.title()));
            }
            let stamp = match next(3) {
                0 => format!("2026-11-{:02}T10:00:0{}Z ", 1 + next(28), next(10)),
                _ => String::new(),
            };
            text.push_str(&format!("- {stamp}note {}\n", next(12)));
            if next(5) == 0 {
                text.push_str("  a second line\n");
            }
            if next(6) == 0 {
                text.push('\n');
            }
        }
        text
    }

    #[test]
    fn the_newest_that_fit_are_what_removal_in_order_keeps() {
        let mut compared = 0;
        for seed in 0..300 {
            let doc = MemoryDoc::parse(&shuffled_memory(seed, 10 + seed as usize % 40));
            let lines = doc.line_count();
            for target in [0, 3, lines / 3, lines / 2, lines - 1, lines, lines + 5] {
                assert_eq!(
                    indices(&doc.newest_that_fit(lines, target)),
                    indices(&doc.choose_removals(lines, target, |_| true)),
                    "seed {seed}, target {target}:\n{}",
                    doc.text
                );
                compared += 1;
            }
        }
        assert_eq!(compared, 2100);
    }

    #[test]
    fn only_copies_of_a_kept_entry_count_as_duplicates() {
        // Oldest first: `a` twice, `b` twice, then `c`. Keeping two lines keeps `b` and
        // `c`: the older `b` is a duplicate, both `a`s are pruned for their age.
        let text = "## System Updates\n- a\n- b\n- a\n- b\n- c\n";
        let doc = MemoryDoc::parse(text);
        let plan = forced_prune(&doc, 3);
        let after = MemoryDoc::parse(plan.text.as_deref().unwrap());
        assert_eq!(after.entries(Section::SystemUpdates), ["b", "c"]);
        assert_eq!(plan.report.archived, 3);
        assert_eq!(plan.report.duplicates, 1);
    }

    #[test]
    fn identical_entries_ignoring_timestamp_collapse_to_newest() {
        let text = "# Persistent Memory\n## Commands\n- cargo test\n## System Updates\n\
- 2026-11-21T10:00:03Z [main-loop/validation] ok\n\
- 2026-11-21T10:00:04.123+01:00 [main-loop/validation]   ok\n\
- 2026-11-21T10:00:05Z [main-loop/validation] failed\n\
- cargo test\n\
- 2026-11-21T10:10:03.5Z [main-loop/validation] ok\n\
- not-a-time [main-loop/validation] ok\n";
        let doc = MemoryDoc::parse(text);
        let plan = forced_prune(&doc, 100);
        assert_eq!(plan.report.duplicates, 2);
        let after = MemoryDoc::parse(plan.text.as_deref().unwrap());
        assert_eq!(
            after.entries(Section::SystemUpdates),
            [
                "2026-11-21T10:00:05Z [main-loop/validation] failed",
                "cargo test",
                "2026-11-21T10:10:03.5Z [main-loop/validation] ok",
                "not-a-time [main-loop/validation] ok",
            ]
        );
        // Same text in another section is not a duplicate.
        assert_eq!(after.entries(Section::Commands), ["cargo test"]);
        assert_eq!(
            keys(&archived_entries(&plan.archive.concat())),
            [
                "2026-11-21T10:00:03Z [main-loop/validation] ok",
                "2026-11-21T10:00:04.123+01:00 [main-loop/validation] ok",
            ]
        );
    }

    #[test]
    fn add_formats_entries_and_creates_missing_sections_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[
                (Section::SystemUpdates, "- first\nsecond\n\n- nested".into()),
                (Section::ImplementationPatterns, "pattern".into()),
                (Section::Commands, "  \n".into()),
            ])
            .unwrap();
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert_eq!(
            text,
            "# Persistent Memory\n## Implementation Patterns\n- pattern\n## Commands\n## System Updates\n- first\n  second\n\n  - nested\n"
        );
        let doc = store.read().unwrap();
        assert_eq!(
            doc.entries(Section::SystemUpdates),
            ["first\nsecond\n\n- nested"]
        );

        fs::write(
            store.memory_path(),
            "# Mine\nintro\n\n## System Updates\n- s\n",
        )
        .unwrap();
        store
            .add(&[
                (Section::Commands, "c".into()),
                (Section::ImplementationPatterns, "p".into()),
                (Section::SystemUpdates, "s2".into()),
            ])
            .unwrap();
        assert_eq!(
            fs::read_to_string(store.memory_path()).unwrap(),
            "# Mine\nintro\n\n## Implementation Patterns\n- p\n## Commands\n- c\n## System Updates\n- s\n- s2\n"
        );

        fs::write(
            store.memory_path(),
            "# Mine\n## commands\n- a\n\n```\n- code\n```\n\n## Notes",
        )
        .unwrap();
        store.add(&[(Section::Commands, "b".into())]).unwrap();
        assert_eq!(
            fs::read_to_string(store.memory_path()).unwrap(),
            "# Mine\n## commands\n- a\n\n```\n- code\n```\n- b\n\n## Notes"
        );
    }

    #[test]
    fn add_after_an_html_block_separates_it_with_a_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        fs::write(
            store.memory_path(),
            "## Commands\n<div>\nraw\n</div>\n\n## System Updates\n",
        )
        .unwrap();
        store.add(&[(Section::Commands, "c".into())]).unwrap();
        let doc = store.read().unwrap();
        assert_eq!(doc.entries(Section::Commands), ["c"]);
        assert!(
            doc.render().contains("</div>\n\n- c\n\n## System Updates"),
            "{:?}",
            doc.render()
        );
    }

    #[test]
    fn prune_archives_before_replacing_and_archive_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..50)
            .map(|n| (Section::ALL[n % 3], format!("entry {n}\nwith detail {n}")))
            .collect();
        store.add(&entries).unwrap();
        let before = store.read().unwrap().line_count();
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 300,
                    target_lines: 40,
                },
                false,
            )
            .unwrap();
        assert_eq!(report.archived, 0, "not forced and under max_lines");
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 300,
                    target_lines: 40,
                },
                true,
            )
            .unwrap();
        assert_eq!(report.lines_before, before);
        assert!(report.lines_after <= 40);
        let kept = store.read().unwrap();
        let archive = fs::read_to_string(store.archive_path()).unwrap();
        assert!(archive.starts_with("# Persistent Memory Archive\n\n## Pruned "));
        assert!(archive.contains("### System Updates\n- entry 2\n  with detail 2\n"));
        let archived = archived_entries(&archive);
        assert_eq!(archived.len(), report.archived);
        let mut all: Vec<String> = kept
            .all_entries()
            .iter()
            .map(|e| entry_key(&e.text))
            .collect();
        all.extend(keys(&archived));
        for (_, text) in &entries {
            assert!(all.contains(&entry_key(text)), "{text} lost");
        }
        // A second batch appends under its own heading.
        store.add(&entries).unwrap();
        store.prune(MemoryLimits::default(), true).unwrap();
        let archive = fs::read_to_string(store.archive_path()).unwrap();
        assert_eq!(archive.matches("\n## Pruned ").count(), 2);
        assert_eq!(archive.matches("# Persistent Memory Archive").count(), 1);
    }

    #[test]
    fn missing_file_reads_as_initial_text_and_prune_leaves_it_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        assert_eq!(store.read().unwrap().render(), initial_text());
        let report = store.prune(MemoryLimits::default(), true).unwrap();
        assert_eq!(report, PruneReport::default());
        assert!(!store.memory_path().exists());
        assert!(!store.archive_path().exists());
    }

    fn append_entry_on_first_attempt(memory: &Path, attempt: usize) {
        if attempt == 0 {
            let mut text = fs::read_to_string(memory).unwrap();
            text.push_str("- written by someone else\n");
            fs::write(memory, text).unwrap();
        }
    }

    /// Fails unless the archive next to `memory` already holds the entries being pruned
    /// and the temp file is written: both come before the rename.
    fn archive_and_temp_are_written(memory: &Path, _attempt: usize) {
        let dir = memory.parent().unwrap();
        let archive =
            fs::read_to_string(dir.join("persistent-memory.archive.md")).unwrap_or_default();
        let archived = keys(&archived_entries(&archive));
        assert!(
            archived.contains(&"old 0".to_string()),
            "archive: {archive:?}"
        );
        let temps = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".persistent-memory.md.tmp")
            })
            .count();
        assert_eq!(temps, 1, "the new file waits in its temp file");
    }

    #[test]
    fn a_prune_archives_and_writes_the_new_file_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let mut text = initial_text();
        for n in 0..20 {
            text.push_str(&format!("- old {n}\n"));
        }
        fs::write(store.memory_path(), text).unwrap();
        store.before_replace = Some(archive_and_temp_are_written);
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 12,
                },
                true,
            )
            .unwrap();
        assert!(report.archived > 0);
        assert!(
            !store
                .read()
                .unwrap()
                .entries(Section::SystemUpdates)
                .contains(&"old 0".to_string())
        );
    }

    fn append_entry_always(memory: &Path, attempt: usize) {
        let mut text = fs::read_to_string(memory).unwrap();
        text.push_str(&format!("- racing writer {attempt}\n"));
        fs::write(memory, text).unwrap();
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn entries_added_at_the_end_are_appended_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "first".into())])
            .unwrap();
        let before = fs::read_to_string(store.memory_path()).unwrap();
        let file = inode(store.memory_path());
        store
            .add(&[
                (Section::SystemUpdates, "second".into()),
                (Section::SystemUpdates, "third\nwith a second line".into()),
            ])
            .unwrap();
        let after = fs::read_to_string(store.memory_path()).unwrap();
        assert_eq!(
            after,
            format!("{before}- second\n- third\n  with a second line\n")
        );
        assert_eq!(inode(store.memory_path()), file, "appended, not replaced");
        // An entry of an earlier section is inserted: the file is replaced.
        store.add(&[(Section::Commands, "cmd".into())]).unwrap();
        assert_ne!(inode(store.memory_path()), file);
        assert_eq!(store.read().unwrap().entries(Section::Commands), ["cmd"]);
    }

    #[test]
    fn change_before_an_append_starts_over_and_keeps_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "base".into())])
            .unwrap();
        store.before_replace = Some(append_entry_on_first_attempt);
        store
            .add(&[(Section::SystemUpdates, "mine".into())])
            .unwrap();
        assert_eq!(
            store.read().unwrap().entries(Section::SystemUpdates),
            ["base", "written by someone else", "mine"]
        );
    }

    #[test]
    fn a_file_that_keeps_changing_during_appends_is_an_error_not_a_lost_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "base".into())])
            .unwrap();
        store.before_replace = Some(append_entry_always);
        let error = store
            .add(&[(Section::SystemUpdates, "mine".into())])
            .unwrap_err();
        assert!(
            matches!(error, MemoryError::KeepsChanging { .. }),
            "{error}"
        );
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(!text.contains("mine"), "{text}");
        assert!(text.contains("racing writer 4"), "{text}");
    }

    #[test]
    fn change_between_read_and_replace_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..30)
            .map(|n| (Section::SystemUpdates, format!("u{n}")))
            .collect();
        store.add(&entries).unwrap();
        store.before_replace = Some(append_entry_on_first_attempt);
        store.add(&[(Section::Commands, "mine".into())]).unwrap();
        let doc = store.read().unwrap();
        assert_eq!(doc.entries(Section::Commands), ["mine"]);
        assert_eq!(
            doc.entries(Section::SystemUpdates)
                .last()
                .map(String::as_str),
            Some("written by someone else")
        );

        fs::write(store.memory_path(), initial_text() + "- a\n- b\n- c\n").unwrap();
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 4,
                },
                true,
            )
            .unwrap();
        let doc = store.read().unwrap();
        let archived = archived_entries(&fs::read_to_string(store.archive_path()).unwrap());
        // The restart re-planned from the file that includes the other writer's entry.
        assert_eq!(doc.line_count(), 4, "{}", doc.render());
        assert_eq!(report.archived, 4);
        for text in ["a", "b", "c", "written by someone else"] {
            assert!(archived.iter().any(|t| t == text), "{text} not archived");
        }
    }

    #[test]
    fn a_file_that_keeps_changing_is_an_error_not_a_lost_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store.add(&[(Section::Commands, "base".into())]).unwrap();
        store.before_replace = Some(append_entry_always);
        let error = store
            .add(&[(Section::Commands, "mine".into())])
            .unwrap_err();
        assert!(
            matches!(error, MemoryError::KeepsChanging { attempts: 5, .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("persistent-memory.md changed during each of 5")
        );
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(!text.contains("mine"));
        assert!(
            text.contains("racing writer 4"),
            "the other writer's edits survive"
        );
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn stale_temp_files_are_removed_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let stale = dir.path().join(".persistent-memory.md.tmp-1-2");
        fs::write(&stale, "half").unwrap();
        store.add(&[(Section::Commands, "c".into())]).unwrap();
        assert!(!stale.exists());
        assert!(dir.path().join(".loop-orchestrator/memory.lock").exists());
    }

    #[test]
    fn add_and_prune_prunes_only_over_max() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let limits = MemoryLimits {
            max_lines: 20,
            target_lines: 10,
        };
        for n in 0..16 {
            let report = store
                .add_and_prune(&[(Section::SystemUpdates, format!("u{n}"))], limits)
                .unwrap();
            assert_eq!(report.archived, 0);
            assert_eq!(report.lines_after, 5 + n);
        }
        let report = store
            .add_and_prune(&[(Section::SystemUpdates, "u16".into())], limits)
            .unwrap();
        assert_eq!(
            (report.lines_before, report.lines_after, report.archived),
            (21, 10, 11)
        );
        assert_eq!(
            store
                .read()
                .unwrap()
                .entries(Section::SystemUpdates)
                .last()
                .map(String::as_str),
            Some("u16")
        );
    }

    #[test]
    fn section_names_parse_loosely() {
        for (name, section) in [
            ("System Updates", Section::SystemUpdates),
            ("system_updates", Section::SystemUpdates),
            ("implementation-patterns", Section::ImplementationPatterns),
            ("COMMANDS", Section::Commands),
        ] {
            assert_eq!(name.parse::<Section>().unwrap(), section);
        }
        let error = "Notes".parse::<Section>().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown memory section \"Notes\"")
        );
    }

    #[test]
    fn entry_key_ignores_layout_and_round_trips_through_the_archive() {
        let text = "first line\nsecond  line\n\n- nested\n  - deeper";
        let formatted = format!("## X\n{}", format_entry(text));
        let back = archived_entries(&formatted);
        assert_eq!(back, [text]);
        assert_eq!(entry_key("  a\n  b\t c "), "a b c");
        assert_eq!(
            entry_key(without_timestamp("2026-11-21T10:00:03Z  x  y")),
            "x y"
        );
    }

    /// A forced prune of `text` to `target_lines`: the kept entries, the archived ones,
    /// after checking that the skeleton is unchanged.
    fn pruned(text: &str, target_lines: usize) -> (Vec<String>, Vec<String>) {
        let doc = MemoryDoc::parse(text);
        let plan = prune_plan(
            &doc,
            MemoryLimits {
                max_lines: 8,
                target_lines,
            },
            true,
        );
        let after = MemoryDoc::parse(plan.text.as_deref().unwrap());
        assert_eq!(after.skeleton(), doc.skeleton(), "{:?}", after.render());
        let kept = after.all_entries().iter().map(|e| e.text.clone()).collect();
        (kept, archived_entries(&plan.archive.concat()))
    }

    #[test]
    fn bare_cr_does_not_panic_or_merge_paragraphs() {
        for text in ["-\r-", "- a\r- b\r\n- c\rpara\r", "\r\r- x\r\n\r"] {
            assert_eq!(MemoryDoc::parse(text).render(), text);
        }
        // `-\r` is an empty item; `.` over `-` is a setext heading, not part of it.
        let text = "\n\n# Implementation Patterns\n-\r.\n-";
        let doc = MemoryDoc::parse(text);
        assert_eq!(doc.entries(Section::ImplementationPatterns), [""]);
        assert_eq!(doc.skeleton(), "\n\n# Implementation Patterns\n.\n-");
        assert_eq!(pruned(text, 0), (vec![], vec!["".into()]));

        let text = "## Commands\r- a\r  b\r\rpara\r- c\r\n- d";
        let doc = MemoryDoc::parse(text);
        assert_eq!(doc.entries(Section::Commands), ["a\nb", "c", "d"]);
        assert_eq!(doc.skeleton(), "## Commands\r\rpara\r");
        // Limits count every line ending the parser sees; line numbers count `\n` only.
        assert_eq!(doc.line_count(), 7);
        let entries = doc.all_entries();
        assert_eq!(entries[0].lines, 2);
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            [1, 1, 2]
        );
        assert_eq!(count_lines("a\rb\r\nc\n\rd"), 5);
        assert_eq!(count_lines("a\r\n\r\n"), 2);
    }

    #[test]
    fn prune_never_turns_a_paragraph_into_a_setext_heading() {
        // Without `- x`, `para` over `---` would be a heading and `y` no entry.
        let (kept, archived) = pruned("## Commands\npara\n- x\n---\n- y\n", 4);
        assert_eq!((kept, archived), (vec!["x".into()], vec!["y".into()]));
    }

    #[test]
    fn prune_keeps_an_ordered_list_a_list() {
        // `3. z` right after `para` would be paragraph text: only `1.` interrupts one.
        let text = "## Commands\npara\n1. x\n2. y\n3. z\n## System Updates\n";
        let (kept, archived) = pruned(text, 4);
        assert_eq!(kept, ["x"]);
        assert_eq!(archived, ["y", "z"]);
        // Once y and z are gone, x can go too.
        let (kept, archived) = pruned(text, 0);
        assert!(kept.is_empty());
        assert_eq!(archived, ["x", "y", "z"]);
    }

    #[test]
    fn add_turns_a_bare_cr_in_an_entry_into_a_continuation_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[(Section::Commands, "first\rsecond\r- not an entry\r".into())])
            .unwrap();
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(
            text.contains("## Commands\n- first\n  second\n  - not an entry\n## System"),
            "{text:?}"
        );
        assert_eq!(
            store.read().unwrap().entries(Section::Commands),
            ["first\nsecond\n- not an entry"]
        );
    }

    /// Texts the line scan must accept, each with a trap for a scan that is not exact.
    const LINE_SCAN_ACCEPTS: &[&str] = &[
        "",
        "\n\n  \n",
        "# Persistent Memory\n## Implementation Patterns\n- p1\n  second line\n## Commands\n- `c` *x* [l](u) <b>\n## System Updates\n- 2026-11-21T10:00:03Z [main-loop/validation] ok\n",
        // Loose lists: blank lines between items go with the earlier item, after the last
        // one they stay; two blank lines do not end a list.
        "## Commands\n- a\n\n- b\n\n\n- c\n\n\n## System Updates\n- d\n   \n",
        // Another bullet starts another list; blank lines between lists stay.
        "## Commands\n- a\n\n* b\n* c\n\n+ d\n- e",
        // Anything indented by two inside an item is the item's.
        "## Commands\n- a\n  ```\n- not an item, fenced\n  ```\n- b\n  <div>\n\n  </div>\n  > quote\n      code\n  # heading in item\n  ---\n  1. ordered\n  [ref]: /url\n- c\n",
        // A fence opened inside an item is closed by the next item.
        "## Commands\n- ```\n  code\n- after\n\n\n  still after\n",
        // Item contents that look like blocks.
        "## Commands\n- - nested\n- # heading\n- > quote\n- 1. one\n- ```\n- <div>\n+ + +\n- -- x\n- *\n- ***\n",
        // ATX headings: closing sequences, empty ones, levels, `#` in the text.
        "# #\n## System Updates ##\n- s\n### Commands\n- still system\n######\n## Commands#\n- c#\n##    commands   #####   \n- c\n## Implementation # Patterns\n- p\n#\n- top\n",
        "- before any heading\n# Commands\n- h1 section\n## Notes\n- not ours\n## Implementation Patterns\n",
        // Multibyte and Unicode whitespace that is not markdown whitespace.
        "## Commands\u{a0}\n- caf\u{e9}\n  \u{a0}\n\n- \u{1f600} \u{3000}\n  \u{3000}\n## Syst\u{e8}me\n- \u{e9}t\u{e9}",
        "## Commands\n- trailing spaces   \n  continued   \n\n   \n",
        "## Commands\n- a\n    deeper\n\n          very deep\n- b",
    ];

    /// Texts the line scan must leave to pulldown-cmark.
    const LINE_SCAN_DECLINES: &[&str] = &[
        "paragraph\n- a\n",
        "## Commands\n- a\nlazy continuation\n",
        "## Commands\n- a\n lazy by one space\n",
        "## Commands\n  indented paragraph\n",
        "## Commands\n- a\n---\n",
        "## Commands\n- a\n* * *\n",
        "## Commands\n- - -\n",
        "## Commands\n-\n  empty first line\n",
        "## Commands\n-  two spaces\n   continued\n",
        "## Commands\n- \n",
        " - indented marker\n",
        "## Commands\n1. ordered\n",
        "## Commands\n> - quoted\n",
        "## Commands\n```\n- fenced\n```\n",
        "<div>\n- html\n</div>\n",
        "#heading\n",
        "####### seven\n",
        "## *System* Updates\n- a\n",
        "## System \\Updates\n- a\n",
        "## System&#32;Updates\n- a\n",
        "## Commands\n-\ta\n",
        "## Commands\n- a\n\tb\n",
        "## Commands\r\n- a\r\n",
        "## Commands\n- a\u{0}\n",
        "## Commands\n- a\u{c}\n",
    ];

    #[test]
    fn line_scan_agrees_with_pulldown_cmark() {
        for text in LINE_SCAN_ACCEPTS {
            assert_eq!(check_line_scan(text), Ok(true), "{text:?}");
        }
        for text in LINE_SCAN_DECLINES {
            assert_eq!(check_line_scan(text), Ok(false), "{text:?}");
            // Declined texts parse as before, through pulldown-cmark.
            assert_eq!(
                scan(text).resolved(text),
                scan_markdown(text).resolved(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn line_scan_agrees_on_every_seed_and_regression_input() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut accepted = Vec::new();
        for dir in ["corpus/memory", "regressions/memory"] {
            for entry in fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let Ok(text) = fs::read_to_string(&path) else {
                    continue;
                };
                let agreed = check_line_scan(&text);
                assert!(agreed.is_ok(), "{}: {agreed:?}", path.display());
                if agreed == Ok(true) {
                    accepted.push(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
        }
        // The seed written for the line scan must reach it, or the fuzzer starts blind.
        assert!(
            accepted.iter().any(|name| name == "line-scan.md"),
            "{accepted:?}"
        );
    }

    #[test]
    fn line_scan_accepts_what_the_supervisor_writes() {
        // The fast path is what keeps a prune of a huge file fast: an entry as `add`
        // formats it, or an initial file, must never send the file to the slow path.
        let text = initial_text();
        assert_eq!(check_line_scan(&text), Ok(true));
        let doc = MemoryDoc::parse(&text)
            .with_added(&[
                (Section::Commands, "cargo test\n\nsecond paragraph".into()),
                (
                    Section::SystemUpdates,
                    "2026-11-21T10:00:03Z [a/b] ok\n- x".into(),
                ),
            ])
            .unwrap();
        assert_eq!(
            check_line_scan(&doc.render()),
            Ok(true),
            "{:?}",
            doc.render()
        );
    }

    #[test]
    fn words_that_only_join_differently_are_not_duplicates() {
        let (kept, archived) = pruned(
            "## Commands\n- a b\n- ab\n- 2026-11-21T10:00:03Z a  b\n- 2026-11-21T10:00:04Z ab\n",
            100,
        );
        assert_eq!(
            (kept, archived),
            (
                vec![
                    "2026-11-21T10:00:03Z a  b".into(),
                    "2026-11-21T10:00:04Z ab".into()
                ],
                vec!["a b".into(), "ab".into()]
            )
        );
    }

    #[test]
    fn skeleton_comparison_ignores_where_pieces_are_cut() {
        let same =
            |a: &[&str], b: &[&str]| same_concatenation(a.iter().copied(), b.iter().copied());
        assert!(same(&["ab", "", "c"], &["a", "bc"]));
        assert!(same(&[], &["", ""]));
        assert!(!same(&["ab"], &["a", "bc"]));
        assert!(!same(&["abc"], &["ab"]));
        assert!(!same(&["a\u{e9}"], &["a", "\u{e8}"]));
    }

    #[test]
    fn own_key_shortcuts_agree_with_the_general_code() {
        let texts = [
            "", "---", "-", "a", "a b", "a b c!", " a", "a ", "a  b", "a\tb", "a\nb", "a\rb",
            "\u{e9}", "a\u{a0}b", "\u{7f}",
        ];
        let is_own_by_definition = |text: &str| {
            text.bytes().all(|b| (b' '..=b'~').contains(&b)) && entry_key(text) == text
        };
        // Every byte class at every position of texts up to three eight-byte words long,
        // and two spaces on either side of a word boundary.
        for len in 1..=26 {
            for at in 0..len {
                for byte in ["~", "!", " ", "\u{1f}", "\u{7f}", "\t", "\u{e9}", "\u{80}"] {
                    let mut text = "x".repeat(len);
                    text.replace_range(at..=at, byte);
                    assert_eq!(is_own_key(&text), is_own_by_definition(&text), "{text:?}");
                    if at + 1 < len && byte == " " {
                        text.replace_range(at + 1..=at + 1, " ");
                        assert!(!is_own_key(&text), "{text:?}");
                    }
                }
            }
        }
        for text in texts {
            let own = is_own_key(text);
            assert_eq!(own, is_own_by_definition(text), "{text:?}");
            for other in texts {
                assert_eq!(same_key(text, other), entry_key(text) == entry_key(other));
            }
        }
        let more = [
            "a\n",
            "a\r\n",
            "a\n\n",
            " - - \n",
            "--\nb",
            "\n",
            "\r",
            "  x  \n  y  \n",
            "x\r\ny",
            "\u{3000}x\u{3000}",
            "- \u{a0}",
            "a\n\n  b\n",
            "\u{e9}\n\u{e8}",
        ];
        for text in texts.into_iter().chain(more) {
            assert_eq!(format_entry(text), format_entry_by_lines(text), "{text:?}");
        }
    }

    #[test]
    fn verbatim_lines_are_what_the_archive_would_write() {
        let mut text = String::from("## Commands\n");
        for line in [
            "- a",
            "- a b",
            "- a  b",
            "- a ",
            "- -- x",
            "* ---",
            "- x -",
            "* star",
            "+ plus",
            "- caf\u{e9}",
            "- \u{e9}t\u{e9}",
            "- x\u{3000}",
            "- `code` *em*",
            "- two\n  lines",
            "- loose\n",
            "- last",
        ] {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("- unterminated");
        for text in [
            text.as_str(),
            "## Commands\n- a\n\n- b\n",
            "## Commands\n- a\n- b",
        ] {
            assert_eq!(check_line_scan(text), Ok(true), "{text:?}");
            let doc = MemoryDoc::parse(text);
            let mut verbatim = 0;
            for entry in &doc.entries {
                if let Some(line) = doc.verbatim_line(entry) {
                    assert_eq!(&text[line], format_entry(doc.entry_text(entry)));
                    verbatim += 1;
                }
            }
            assert!(verbatim > 0, "{text:?}");
            // Every way of cutting entries out gives the batch the archive always had.
            let count = doc.entries.len();
            for removed in [
                (0..count).collect::<Vec<_>>(),
                (0..count).step_by(2).collect(),
                (1..count).step_by(3).collect(),
            ] {
                let mut expected = String::new();
                for section in Section::ALL {
                    let group: Vec<&DocEntry> = removed
                        .iter()
                        .map(|&i| &doc.entries[i])
                        .filter(|e| e.section == section)
                        .collect();
                    if !group.is_empty() {
                        expected.push_str(&format!("### {}\n", section.title()));
                    }
                    for entry in group {
                        expected.push_str(&format_entry(doc.entry_text(entry)));
                    }
                }
                assert_eq!(
                    archive_batch(&doc, &removed).concat(),
                    expected,
                    "{removed:?}"
                );
            }
        }
    }

    /// [`without_timestamp`] by chrono alone, as it was before its shortcut.
    fn without_timestamp_by_chrono(text: &str) -> &str {
        let trimmed = text.trim_start();
        let token_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let (token, rest) = trimmed.split_at(token_end);
        if DateTime::parse_from_rfc3339(token).is_ok() {
            rest.trim_start()
        } else {
            trimmed
        }
    }

    #[test]
    fn timestamp_shortcut_agrees_with_chrono() {
        let mut tokens: Vec<String> = [
            "2026-11-21T10:00:03Z",
            "2026-11-21T10:00:03z",
            "2026-11-21t10:00:03Z",
            "2026-11-21 10:00:03Z",
            "2026-11-21T10:00:03",
            "2026-11-21T10:00:03+01:00",
            "2026-11-21T10:00:03-23:59",
            "2026-11-21T10:00:03+24:00",
            "2026-11-21T10:00:03+99:00",
            "2026-11-21T10:00:03+05:60",
            "2026-11-21T10:00:03+0500",
            "2026-11-21T10:00:03+05",
            "2026-11-21T10:00:03\u{2212}05:00",
            "2026-11-21T10:00:03.Z",
            "2026-11-21T10:00:03.5Z",
            "2026-11-21T10:00:03.123456789Z",
            "2026-11-21T10:00:03.1234567891234Z",
            "2026-11-21T10:00:03,5Z",
            "2026-11-21T10:00:60Z",
            "2026-11-21T23:59:60.999999999Z",
            "2026-11-21T23:59:61Z",
            "2026-11-21T24:00:00Z",
            "2026-11-21T23:60:00Z",
            "2026-02-29T00:00:00Z",
            "2028-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-23:59",
            "2026-1-21T10:00:03Z",
            "2026-11-21T10:00:03ZZ",
            "2026-11-21T10:00:03Zx",
            "2026-11-21T10:00:03+01:00:00",
            "2026-11-21T10:00:03Z\u{e9}",
            "2026-11-21",
            "12345",
            "\u{661}026-11-21T10:00:03Z",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        // Every field at and around its limits.
        for (at, values) in [
            (5, &["00", "01", "02", "12", "13", "99"][..]),
            (8, &["00", "01", "28", "29", "30", "31", "32"]),
            (11, &["00", "23", "24", "99"]),
            (14, &["00", "59", "60"]),
            (17, &["00", "59", "60", "61"]),
        ] {
            for month in ["02", "04", "12"] {
                for value in values {
                    let mut token = format!("2024-{month}-10T10:20:30Z").into_bytes();
                    token[at..at + 2].copy_from_slice(value.as_bytes());
                    tokens.push(String::from_utf8(token).unwrap());
                }
            }
        }
        let mut shortcuts = 0;
        for token in &tokens {
            for after in [
                "",
                " rest",
                "  rest  ",
                "\trest",
                "\nrest",
                "\u{b}rest",
                "\u{a0}rest",
                "\u{3000}rest",
                "x",
            ] {
                let text = format!("{token}{after}");
                shortcuts += usize::from(plain_timestamp_len(text.as_bytes()).is_some());
                assert_eq!(
                    without_timestamp(&text),
                    without_timestamp_by_chrono(&text),
                    "{text:?}"
                );
            }
        }
        // The shortcut decided most of the valid ones.
        assert!(shortcuts > 100, "{shortcuts}");
    }

    #[test]
    fn an_edit_that_keeps_the_length_still_starts_the_replace_over() {
        fn swap_a_letter_on_first_attempt(memory: &Path, attempt: usize) {
            if attempt == 0 {
                let text = fs::read_to_string(memory).unwrap();
                fs::write(memory, text.replace("- keep me", "- kept me")).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..30)
            .map(|n| (Section::SystemUpdates, format!("u{n}")))
            .collect();
        store.add(&entries).unwrap();
        store.add(&[(Section::Commands, "keep me".into())]).unwrap();
        store.before_replace = Some(swap_a_letter_on_first_attempt);
        store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 10,
                },
                true,
            )
            .unwrap();
        let doc = store.read().unwrap();
        assert_eq!(
            doc.entries(Section::Commands),
            ["kept me"],
            "{}",
            doc.render()
        );
    }

    /// [`format_entry`] without its one-line shortcut.
    fn format_entry_by_lines(text: &str) -> String {
        let mut out = String::from("-");
        for (index, line) in split_lines(text).enumerate() {
            if index > 0 {
                out.push('\n');
            }
            if !line.trim().is_empty() {
                out.push_str(if index == 0 { " " } else { "  " });
                out.push_str(if index == 0 {
                    line.trim()
                } else {
                    line.trim_end()
                });
            }
        }
        if split_lines(text).next().is_some_and(|first| {
            first.trim().starts_with('-') && first.chars().all(|c| c == '-' || c.is_whitespace())
        }) {
            out.replace_range(..1, "*");
        }
        out.push('\n');
        out
    }

    #[test]
    fn an_entry_of_dashes_is_archived_as_an_item_not_a_thematic_break() {
        // `*               ---` is an item holding `---` (found by fuzzing); `- ---` is
        // a thematic break, and the entry was neither kept nor archived.
        let doc = MemoryDoc::parse("## Commands\n*               ---\n- -\n* - -\n");
        let texts: Vec<&str> = doc.all_entries().iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts.len(), 3);
        for text in texts {
            let back = archived_entries(&format!("### Commands\n{}", format_entry(text)));
            assert_eq!(keys(&back), [entry_key(text)], "{text:?}");
        }
    }

    #[test]
    fn an_entry_starting_with_a_tab_keeps_its_lines_in_the_archive() {
        // `  - \tx` has its content at column 4 (the tab would make five spaces, so the
        // text starts one past the marker, as `\tx`); written back as `- \tx` the tab
        // only reaches column 4 and `  y` fell out of the item (found by fuzzing).
        let doc = MemoryDoc::parse("## Commands\n  - \tx\n\n    y\n");
        let text = &doc.all_entries()[0].text;
        assert_eq!(text, "\tx\n\ny");
        let back = archived_entries(&format!("### Commands\n{}", format_entry(text)));
        assert_eq!(keys(&back), [entry_key(text)]);
    }

    fn keys(texts: &[String]) -> Vec<String> {
        texts.iter().map(|t| entry_key(t)).collect()
    }
}
