//! How an entry is written, in the memory file and in the archive alike: `- first` and
//! continuation lines indented by two, `* ` for a first line of dashes; and what a
//! caller's text becomes before it is written.

use super::lines::{line_end, split_lines};

/// A list item as it is written: `- first` and continuation lines indented by two.
pub(super) fn format_entry(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    write_entry(&mut out, text);
    out
}

/// [`format_entry`], appended to `out`.
pub(super) fn write_entry(out: &mut String, text: &str) {
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
/// lines, no `- ` marker of its own, and only `\n` line endings: a bare `\r` (which
/// markdown reads as a line ending) becomes a continuation line, so it cannot end the
/// item where the formatting does not expect. `None` for an empty or blank text.
pub(super) fn clean_entry(text: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::test_support::{SHORT_TEXTS, keys};
    use crate::memory::{MemoryDoc, archived_entries, entry_key};

    #[test]
    fn format_entry_shortcut_agrees_with_formatting_line_by_line() {
        let texts = SHORT_TEXTS;
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
}
