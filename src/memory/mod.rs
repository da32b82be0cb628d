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
//!   an HTML block is text, not an entry. Section headings match ignoring case, `-`,
//!   `_` and extra spaces. Files made only of headings, bullet items and their
//!   indented lines (what this module writes) take a line scan instead, which must find
//!   exactly what pulldown-cmark finds and leaves every other file to it (see
//!   `scan::scan_lines`).
//! - Line endings are CommonMark's (`\n`, `\r\n`, a bare `\r`) wherever a span or a
//!   line count is computed, so spans agree with the parser's; only [`Entry::line`]
//!   counts `\n` alone, as `grep -n` does.
//! - `add` appends list items at the end of their sections (creating missing sections
//!   in canonical order); a multi-line text becomes `- first` plus lines indented by
//!   two spaces (a bare `\r` in it starts such a line too). The archive is written the
//!   same way. In both files a first line of dashes takes `* `, since `- ---` is a
//!   thematic break.
//! - `prune` collapses the entries of a section that are the same apart from a leading
//!   RFC 3339 timestamp and the spacing of their words to the newest copy, then removes
//!   the oldest entries (file order is age), System Updates before Commands before
//!   Implementation Patterns, until the file has at most `target_lines` lines. The
//!   result is parsed again before it is used: an entry whose removal would change how
//!   the rest parses (a paragraph turning into a setext heading, a list no longer
//!   interrupting a paragraph) is kept instead.
//! - Nothing is lost: every removed entry is appended to the archive and fsynced
//!   *before* the memory file is replaced (temp file, fsync, rename, directory fsync).
//!   A crash at any instant leaves each entry in the memory file, the archive, or both.
//! - An update that only adds text at the end of the file (the supervisor's System Updates
//!   entries, when that section is last) appends it in place, one write and one
//!   fdatasync, after checking that the file still holds what was read; a crash during
//!   that write leaves part of the new text, never loses old text.
//! - Every write holds an exclusive fd-lock on the lock file, and re-reads the memory
//!   file just before the rename or the append: if someone edited it meanwhile, the
//!   update starts over from the new content (writers that do not take the lock, such
//!   as editors, can still race the final write; the re-check narrows that window to
//!   microseconds).
//!
//! Where things are:
//! - `section`: the three sections, their titles and their prune order;
//! - `document`: [`MemoryDoc`], a parsed file, its entries and skeleton, adding entries;
//! - `scan`: finding headings and items, by pulldown-cmark or by the line scan;
//! - `lines`: CommonMark line endings, line counts and line numbers;
//! - `format`: how an entry is written, in the memory file and in the archive;
//! - `key`: [`entry_key`] and the dedupe key a prune collapses copies by;
//! - `prune`: [`MemoryLimits`], [`PruneReport`] and which entries a prune removes;
//! - `archive`: the archive batch, appending it, reading entries back;
//! - `store`: [`MemoryStore`], the lock, the re-check and the writes;
//! - `error`: [`MemoryError`].

mod archive;
mod document;
mod error;
mod format;
mod key;
mod lines;
mod prune;
mod scan;
mod section;
mod store;
#[cfg(test)]
mod test_support;

pub use archive::{ARCHIVE_TITLE, archived_entries};
pub use document::{Entry, MemoryDoc, TITLE, initial_text};
pub use error::MemoryError;
pub use key::entry_key;
pub use lines::count_lines;
pub use prune::{MemoryLimits, PruneReport};
#[cfg(any(test, feature = "testing"))]
pub use scan::check_line_scan;
pub use section::Section;
pub use store::MemoryStore;
