//! The top-level headings and top-level list items of a markdown text, with their
//! lines and spans: by pulldown-cmark, or by a line scan for the texts the memory file
//! is made of, which must find exactly what pulldown-cmark finds.

use std::ops::Range;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::Section;
use super::lines::{
    LineIndex, count_byte, count_lines, last_content_end, line_end, line_start, split_lines,
    through_line_end,
};

/// A heading outside any container, and the section its title names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Heading {
    pub(super) level: HeadingLevel,
    pub(super) section: Option<Section>,
    /// From the start of the heading's first line to the end of its last line.
    pub(super) lines: Range<usize>,
}

/// An item's text. Most entries are one line, a marker, a space and the text: their
/// text is a slice of the document. A string per entry made parsing a file of a
/// hundred thousand entries allocate (and free) a hundred thousand times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ItemText {
    /// The bytes of the document at this range.
    Slice(Range<usize>),
    /// Dedented from several lines, or trimmed.
    Owned(String),
}

impl ItemText {
    /// The text, given the document it came from.
    pub(super) fn get<'a>(&'a self, text: &'a str) -> &'a str {
        match self {
            ItemText::Slice(range) => &text[range.clone()],
            ItemText::Owned(owned) => owned,
        }
    }

    pub(super) fn into_string(self, text: &str) -> String {
        match self {
            ItemText::Slice(range) => text[range].to_string(),
            ItemText::Owned(owned) => owned,
        }
    }
}

#[derive(Debug)]
pub(super) struct Scanned {
    pub(super) headings: Vec<Heading>,
    pub(super) items: Vec<Item>,
    /// [`count_lines`] of the text.
    pub(super) line_count: usize,
}

#[derive(Debug)]
pub(super) struct Item {
    /// How many headings precede the item.
    pub(super) heading_count: usize,
    pub(super) text: ItemText,
    pub(super) line: usize,
    /// Whole lines, from the marker's line to the last non-blank line.
    pub(super) lines: Range<usize>,
    pub(super) span: Range<usize>,
    /// Lines of `span`, counted like [`count_lines`].
    pub(super) span_lines: usize,
}

/// The top-level headings and top-level list items of a markdown text: the line scan
/// when it can vouch for its answer, else the full parse.
pub(super) fn scan(text: &str) -> Scanned {
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

/// The text of a list item without its marker, continuation lines dedented by up to
/// the marker's width (a lazy continuation line indented less loses the spaces it has).
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

/// For the `memory` fuzz target and the tests: `Ok(true)` when the line scan accepts
/// `text` and finds exactly what pulldown-cmark finds (headings, items, their texts,
/// lines and spans), `Ok(false)` when it leaves `text` to pulldown-cmark, and both
/// answers otherwise.
#[cfg(any(test, feature = "testing"))]
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

#[cfg(any(test, feature = "testing"))]
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

/// An [`Item`] with its text, to compare the two scans.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, PartialEq, Eq)]
struct ResolvedItem {
    heading_count: usize,
    text: String,
    line: usize,
    lines: Range<usize>,
    span: Range<usize>,
    span_lines: usize,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::memory::{MemoryDoc, initial_text};

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
}
