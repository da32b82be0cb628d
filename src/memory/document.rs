//! [`MemoryDoc`], a parsed memory file: its entries (the top-level items of the three
//! sections), the skeleton around them, and the text with entries added. It keeps the
//! whole text, and an unmodified document renders back to the identical bytes.

use std::ops::Range;
use std::sync::OnceLock;

use pulldown_cmark::HeadingLevel;

use super::Section;
use super::format::format_entry;
use super::key::entry_key;
use super::lines::{count_lines, last_content_end};
use super::scan::{Heading, ItemText, scan};

/// Title of the memory file, and the first line of [`initial_text`].
pub const TITLE: &str = "Persistent Memory";

/// The text of a new memory file: the title and the three empty sections.
pub fn initial_text() -> String {
    let mut text = format!("# {TITLE}\n");
    for section in Section::ALL {
        text.push_str(&format!("## {}\n", section.title()));
    }
    text
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
pub(super) struct DocEntry {
    pub(super) section: Section,
    pub(super) text: ItemText,
    /// As [`Entry::line`].
    pub(super) line: usize,
    /// Whole lines, from the marker's line to the last non-blank line.
    pub(super) lines: Range<usize>,
    /// Bytes removed with the entry: its lines, plus the blank lines that separate it
    /// from the next item of the same list (so a loose list does not leave gaps).
    pub(super) span: Range<usize>,
    /// Lines of `span`, counted like [`count_lines`].
    pub(super) span_lines: usize,
}

/// A parsed memory file. It keeps the whole text; edits produce new text.
#[derive(Debug, Clone)]
pub struct MemoryDoc {
    pub(super) text: String,
    pub(super) entries: Vec<DocEntry>,
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

impl MemoryDoc {
    pub fn parse(text: &str) -> MemoryDoc {
        MemoryDoc::from_text(text.to_string())
    }

    pub(super) fn from_text(text: String) -> MemoryDoc {
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
    pub(super) fn entry_text<'a>(&'a self, entry: &'a DocEntry) -> &'a str {
        entry.text.get(&self.text)
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

    /// Whether a heading names `section`.
    #[cfg(any(test, feature = "testing"))]
    pub fn has_section(&self, section: Section) -> bool {
        self.headings.iter().any(|h| h.section == Some(section))
    }

    /// The text with every entry removed: what pruning can never touch.
    pub fn skeleton(&self) -> String {
        self.skeleton_pieces().collect()
    }

    /// The text between the entries, in order.
    pub(super) fn skeleton_pieces(&self) -> impl Iterator<Item = &str> {
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

    /// The document with `entries` appended to their sections, or the section whose
    /// insertion would not parse back as exactly the entries intended.
    pub(super) fn with_added(&self, entries: &[(Section, String)]) -> Result<MemoryDoc, Section> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::lines::count_lines;
    use crate::memory::test_support::{forced_prune, pruned};

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
}
