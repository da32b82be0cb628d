//! `persistent-memory.archive.md`, the append-only home of pruned entries: the batch a
//! prune appends (entries grouped under `### Section` headings, written as in the
//! memory file), appending it durably, and reading entries back.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::ops::Range;
use std::path::Path;

use chrono::{SecondsFormat, Utc};

use super::document::{DocEntry, MemoryDoc};
use super::format::write_entry;
use super::prune::by_section;
use super::scan::{ItemText, scan};
use super::store::sync_parent;
use super::{MemoryError, Section};

/// Title of the archive file, written when the archive is created.
pub const ARCHIVE_TITLE: &str = "Persistent Memory Archive";

/// Every entry text recorded in an archive file, in file order.
pub fn archived_entries(archive_text: &str) -> Vec<String> {
    scan(archive_text)
        .items
        .into_iter()
        .map(|item| item.text.into_string(archive_text))
        .collect()
}

/// The archive batch for the `removed` entries of `doc` (ascending indices): grouped by
/// section in canonical order, file order (age) within each, each entry as
/// [`write_entry`] formats it, in pieces to write one after the other.
///
/// An entry whose line in the file is already what `write_entry` makes of it (see
/// [`MemoryDoc::verbatim_line`]) is that line of the document, and lines that adjoin
/// in the file make one piece: pruning a large file archives megabytes of such lines,
/// and copying them into a new string only to write it out cost more than the write.
pub(super) fn archive_batch<'a>(doc: &'a MemoryDoc, removed: &[usize]) -> Vec<Cow<'a, str>> {
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

impl MemoryDoc {
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
}

/// Appends one batch of `count` formatted entries under a `## Pruned` heading, and
/// fsyncs it. A new archive starts with its title, and its directory is fsynced too.
pub(super) fn append_archive(
    path: &Path,
    count: usize,
    entries: &[Cow<str>],
) -> Result<(), MemoryError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::format::format_entry;
    use crate::memory::scan::check_line_scan;

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
}
