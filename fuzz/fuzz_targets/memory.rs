//! `memory::MemoryDoc::parse` on arbitrary UTF-8 text, then a forced prune through a real
//! `MemoryStore` in a temp directory.
//!
//! Properties: no panic; where the line scan (the fast path for simple files) accepts
//! the text, it finds exactly the headings, entries, lines and spans pulldown-cmark
//! finds; parsing renders back the identical text; every entry's line is a line of the
//! text. A prune may fail with an error (then the memory file must be untouched), but
//! when it succeeds: the skeleton (everything but entries: headings, paragraphs, code)
//! is unchanged, and every entry of the input is, as often as it occurred, either in
//! the new memory file or in the archive (compared by `entry_key`).

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use loop_orchestrator::memory::{
    MemoryDoc, MemoryLimits, MemoryStore, Section, archived_entries, check_line_scan, entry_key,
};

/// Small limits, so that ordinary inputs are pruned.
const LIMITS: MemoryLimits = MemoryLimits {
    max_lines: 8,
    target_lines: 4,
};

fn count<'a>(keys: impl Iterator<Item = String>, into: &mut HashMap<String, isize>, by: isize) {
    for key in keys {
        *into.entry(key).or_default() += by;
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input, and two variants the line scan is likelier to accept: without control
    // characters, and with every other line indented into the item above it.
    let plain: String = text
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect();
    let indented: String = plain
        .split_inclusive('\n')
        .map(|line| match line.as_bytes().first() {
            Some(b'#' | b'-' | b'*' | b'+' | b'\n') | None => line.to_string(),
            Some(_) => format!("  {line}"),
        })
        .collect();
    for variant in [text, &plain, &indented] {
        if let Err(difference) = check_line_scan(variant) {
            panic!("the line scan disagrees with pulldown-cmark on {variant:?}:\n{difference}");
        }
    }
    let before = MemoryDoc::parse(text);
    assert_eq!(before.render(), text, "render() is not the input");
    let lines = text.matches('\n').count() + 1;
    for entry in before.all_entries() {
        assert!(
            entry.line >= 1 && entry.line <= lines,
            "entry on line {} of a {lines}-line text",
            entry.line
        );
    }
    let by_section: usize = Section::ALL.iter().map(|s| before.entries(*s).len()).sum();
    assert_eq!(by_section, before.entry_count());

    let dir = tempfile::tempdir().expect("temp dir");
    let store = MemoryStore::of(&loop_orchestrator::instance::Instance::new(dir.path()));
    std::fs::write(store.memory_path(), text).expect("write memory file");
    let result = store.prune(LIMITS, true);
    let after_text = std::fs::read_to_string(store.memory_path()).expect("read memory file");
    if result.is_err() {
        assert_eq!(after_text, text, "a failed prune changed the memory file");
        return;
    }
    let archive_text = std::fs::read_to_string(store.archive_path()).unwrap_or_default();
    let after = MemoryDoc::parse(&after_text);

    // Multiset: input entries minus kept ones minus archived ones; nothing may stay positive.
    let mut missing: HashMap<String, isize> = HashMap::new();
    count(
        before.all_entries().iter().map(|e| entry_key(&e.text)),
        &mut missing,
        1,
    );
    count(
        after.all_entries().iter().map(|e| entry_key(&e.text)),
        &mut missing,
        -1,
    );
    count(
        archived_entries(&archive_text).iter().map(|t| entry_key(t)),
        &mut missing,
        -1,
    );
    let mut lost: Vec<&String> = missing
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, _)| k)
        .collect();
    lost.sort();
    let (skeleton_before, skeleton_after) = (before.skeleton(), after.skeleton());
    let mut failures = Vec::new();
    if !lost.is_empty() {
        failures.push(format!(
            "entries neither kept as entries nor archived: {lost:?}"
        ));
    }
    if skeleton_after != skeleton_before {
        failures.push(format!(
            "prune changed text outside the entries: skeleton before {skeleton_before:?}, after {skeleton_after:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "{}\n--- input ---\n{text}\n--- memory after ---\n{after_text}\n--- archive ---\n{archive_text}",
        failures.join("\n")
    );
});
