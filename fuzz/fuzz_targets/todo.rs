//! `todo::Todo::parse` on arbitrary UTF-8 text.
//!
//! Properties: no panic; items are numbered 1..=n in order; every item's line is a line
//! of the text; an item's text is one trimmed line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loop_orchestrator::todo::Todo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let todo = Todo::parse(text);
    let lines = text.matches('\n').count() + 1;
    let mut previous_line = 0;
    for (index, item) in todo.items.iter().enumerate() {
        assert_eq!(
            item.number,
            index + 1,
            "items out of order: {:?}",
            todo.items
        );
        assert!(
            item.line >= 1 && item.line <= lines,
            "item {} on line {} of a {lines}-line text",
            item.number,
            item.line
        );
        // File order: a later item never starts on an earlier line.
        assert!(
            item.line >= previous_line,
            "item {} on line {} after an item on line {previous_line}",
            item.number,
            item.line
        );
        previous_line = item.line;
        assert!(
            !item.text.contains('\n') && item.text.trim() == item.text,
            "item text not one trimmed line: {:?}",
            item.text
        );
        assert_eq!(todo.item(item.number), Some(item));
    }
    let (done, total) = todo.progress();
    assert!(done <= total && total == todo.items.len());
});
