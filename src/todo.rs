//! `TODO.md`: the advisory plan (SPEC §6). This module reads it; nothing here runs it.
//!
//! # Rules
//! - The file is parsed with pulldown-cmark, task lists (and strikethrough, so `~~x~~`
//!   reads as `x`) enabled. Only task-list items count: `- [ ]` is open, `- [x]` and
//!   `- [X]` are done, in bullet or ordered lists, at any depth, inside block quotes too.
//!   Plain list items do not count, but task items nested under them do.
//! - Items are numbered from 1 over all task items in file order (a parent before its
//!   children); that number is what `run-cycle --todo N` names.
//! - An item's text is its own inline text only: not its nested items, not code blocks
//!   inside it. Inline code, emphasis, links and images contribute their text; line
//!   breaks and runs of whitespace become one space; the result is trimmed.
//! - An item's heading path is the text of the headings it sits under, outermost first
//!   (`["Roadmap", "Service"]`): a heading closes every heading of its level or deeper.
//! - Text inside fenced or indented code blocks never counts, whatever it looks like.
//! - `line` is the 1-based line on which the item's list marker stands.
//! - A missing file is an empty plan; a file that is not UTF-8 is an error.

use std::io;
use std::path::{Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// One task-list item of TODO.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoItem {
    /// 1-based, over all task items in file order.
    pub number: usize,
    pub done: bool,
    /// The item's own inline text, on one line, trimmed.
    pub text: String,
    /// The headings the item sits under, outermost first.
    pub headings: Vec<String>,
    /// 1-based line of the item's list marker.
    pub line: usize,
}

/// The task items of TODO.md, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Todo {
    pub items: Vec<TodoItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum TodoError {
    #[error("cannot read {path}: {source}", path = path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: not valid UTF-8 (save the file as UTF-8)", path = path.display())]
    NotUtf8 { path: PathBuf, line: usize },
}

/// An item being read: where its text goes until its end, and its slot in the result
/// once its task marker has been seen.
struct OpenItem {
    start: usize,
    slot: Option<usize>,
    text: String,
}

impl Todo {
    pub fn parse(text: &str) -> Todo {
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let line_of = |offset: usize| line_starts.partition_point(|&start| start <= offset);

        let mut items: Vec<TodoItem> = Vec::new();
        let mut open: Vec<OpenItem> = Vec::new();
        let mut headings: Vec<(HeadingLevel, String)> = Vec::new();
        let mut heading: Option<String> = None;
        let mut in_code_block = false;

        let options = Options::ENABLE_TASKLISTS | Options::ENABLE_STRIKETHROUGH;
        for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
            match event {
                Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
                Event::End(TagEnd::Heading(level)) => {
                    let title = one_line(&heading.take().unwrap_or_default());
                    while headings.last().is_some_and(|(l, _)| *l >= level) {
                        headings.pop();
                    }
                    headings.push((level, title));
                }
                Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
                Event::End(TagEnd::CodeBlock) => in_code_block = false,
                Event::Start(Tag::Item) => open.push(OpenItem {
                    start: range.start,
                    slot: None,
                    text: String::new(),
                }),
                Event::TaskListMarker(done) => {
                    // The marker opens the innermost item; numbering follows file order,
                    // so the slot is taken now, before any nested item ends.
                    if let Some(item) = open.last_mut() {
                        item.slot = Some(items.len());
                        items.push(TodoItem {
                            number: items.len() + 1,
                            done,
                            text: String::new(),
                            headings: headings.iter().map(|(_, h)| h.clone()).collect(),
                            line: line_of(item.start),
                        });
                    }
                }
                Event::End(TagEnd::Item) => {
                    let Some(OpenItem { slot, text, .. }) = open.pop() else {
                        continue;
                    };
                    if let Some(item) = slot.and_then(|slot| items.get_mut(slot)) {
                        item.text = one_line(&text);
                    }
                }
                Event::Text(s) | Event::Code(s) if !in_code_block => {
                    if let Some(h) = heading.as_mut() {
                        h.push_str(&s);
                    } else if let Some(item) = open.last_mut() {
                        item.text.push_str(&s);
                    }
                }
                Event::SoftBreak | Event::HardBreak | Event::End(TagEnd::Paragraph) => {
                    if let Some(h) = heading.as_mut() {
                        h.push(' ');
                    } else if let Some(item) = open.last_mut() {
                        item.text.push(' ');
                    }
                }
                _ => {}
            }
        }
        Todo { items }
    }

    /// Reads and parses `path`; a missing file is an empty plan.
    pub fn load(path: &Path) -> Result<Todo, TodoError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Todo::default()),
            Err(source) => {
                return Err(TodoError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Todo::parse(&text)),
            Err(e) => {
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                Err(TodoError::NotUtf8 {
                    path: path.to_owned(),
                    line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
                })
            }
        }
    }

    pub fn open_items(&self) -> impl Iterator<Item = &TodoItem> {
        self.items.iter().filter(|item| !item.done)
    }

    /// `(done, total)` over all task items.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.items.iter().filter(|item| item.done).count();
        (done, self.items.len())
    }

    /// Item `number` (1-based, as shown by `todo` and taken by `run-cycle --todo N`).
    pub fn item(&self, number: usize) -> Option<&TodoItem> {
        number.checked_sub(1).and_then(|i| self.items.get(i))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(todo: &Todo) -> Vec<&str> {
        todo.items.iter().map(|i| i.text.as_str()).collect()
    }

    #[test]
    fn headings_give_each_item_its_path() {
        let todo = Todo::parse(
            "- [ ] before any heading\n\
             # Roadmap\n\
             ## Service `serve`\n\
             - [ ] timer\n\
             ### Deep *down*\n\
             - [ ] deep\n\
             ## CLI\n\
             - [ ] cli\n\n\
             Other\n\
             =====\n\
             - [ ] setext\n",
        );
        let paths: Vec<Vec<&str>> = todo
            .items
            .iter()
            .map(|i| i.headings.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            paths,
            vec![
                vec![],
                vec!["Roadmap", "Service serve"],
                vec!["Roadmap", "Service serve", "Deep down"],
                vec!["Roadmap", "CLI"],
                vec!["Other"],
            ]
        );
    }

    #[test]
    fn nested_items_count_with_their_own_text_in_file_order() {
        let todo = Todo::parse(
            "- [ ] parent\n  continued here\n  - [x] child one\n    - [ ] grandchild\n  - [ ] child two\n\
             - plain bullet\n  - [ ] under a plain bullet\n\
             - [ ] sibling\n",
        );
        assert_eq!(
            texts(&todo),
            vec![
                "parent continued here",
                "child one",
                "grandchild",
                "child two",
                "under a plain bullet",
                "sibling",
            ]
        );
        let numbers: Vec<usize> = todo.items.iter().map(|i| i.number).collect();
        assert_eq!(numbers, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(todo.item(2).unwrap().text, "child one");
        assert!(todo.item(2).unwrap().done);
        assert_eq!(todo.item(0), None);
        assert_eq!(todo.item(7), None);
    }

    #[test]
    fn code_blocks_never_count() {
        let todo = Todo::parse(
            "```markdown\n- [ ] fenced\n```\n\
             ~~~\n- [x] tilde fenced\n~~~\n\
             \n    - [ ] indented code\n\n\
             - [ ] real item\n\n  ```\n  - [ ] fenced inside the item\n  ```\n",
        );
        assert_eq!(texts(&todo), vec!["real item"]);
    }

    #[test]
    fn line_numbers_point_at_the_marker() {
        let todo = Todo::parse(
            "# Plan\n\n- [ ] one\n\n  second paragraph of one\n\n- [x] two\n  - [ ] nested\n\n1. [ ] ordered\n> - [ ] quoted\n",
        );
        let found: Vec<(usize, &str)> = todo
            .items
            .iter()
            .map(|i| (i.line, i.text.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (3, "one second paragraph of one"),
                (7, "two"),
                (8, "nested"),
                (10, "ordered"),
                (11, "quoted"),
            ]
        );
    }

    #[test]
    fn done_markers_and_plain_bullets() {
        let todo = Todo::parse(
            "- [x] lower\n- [X] upper\n- [ ] open\n- plain\n* [ ]not a task without space\n+ [ ] plus\n",
        );
        let found: Vec<(bool, &str)> = todo
            .items
            .iter()
            .map(|i| (i.done, i.text.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![
                (true, "lower"),
                (true, "upper"),
                (false, "open"),
                (false, "plus")
            ]
        );
        assert_eq!(todo.progress(), (2, 4));
        let open: Vec<&str> = todo.open_items().map(|i| i.text.as_str()).collect();
        assert_eq!(open, vec!["open", "plus"]);
    }

    #[test]
    fn inline_markup_contributes_its_text() {
        let todo = Todo::parse(
            "- [ ] Fix `run-cycle` for **[DST](https://example.com) gaps** and ~~old~~ _new_ ![alt](x.png)\n",
        );
        assert_eq!(
            texts(&todo),
            vec!["Fix run-cycle for DST gaps and old new alt"]
        );
    }

    #[test]
    fn empty_and_missing_files_are_empty_plans() {
        assert_eq!(Todo::parse(""), Todo::default());
        assert_eq!(
            Todo::parse("# Just a title\n\nSome prose.\n").progress(),
            (0, 0)
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Todo::load(&dir.path().join("TODO.md")).unwrap(),
            Todo::default()
        );
    }

    #[test]
    fn load_reads_the_file_and_reports_bad_utf8_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("TODO.md");
        std::fs::write(&path, "# Plan\n- [ ] a\n- [x] b\n").unwrap();
        let todo = Todo::load(&path).unwrap();
        assert_eq!(todo.progress(), (1, 2));

        std::fs::write(&path, b"# Plan\n- [ ] a\n- [ ] \xff\n").unwrap();
        let err = Todo::load(&path).unwrap_err();
        assert!(matches!(err, TodoError::NotUtf8 { line: 3, .. }), "{err:?}");
        assert!(err.to_string().contains("TODO.md:3"), "{err}");
    }
}
