//! Helpers the unit tests of several files share.

use super::prune::prune_plan;
use super::store::Plan;
use super::{MemoryDoc, MemoryLimits, archived_entries, entry_key};

/// Short texts at the edges of the shortcuts that judge or write an entry without the
/// general code: empty, dashes, spaces at either end or doubled, control characters,
/// line endings, non-ASCII letters and spaces.
pub(super) const SHORT_TEXTS: [&str; 15] = [
    "", "---", "-", "a", "a b", "a b c!", " a", "a ", "a  b", "a\tb", "a\nb", "a\rb", "\u{e9}",
    "a\u{a0}b", "\u{7f}",
];

/// The plan of a forced prune of `doc` down to `target_lines`.
pub(super) fn forced_prune(doc: &MemoryDoc, target_lines: usize) -> Plan<'_> {
    let limits = MemoryLimits {
        max_lines: 0,
        target_lines,
    };
    prune_plan(doc, limits, true)
}

/// A forced prune of `text` to `target_lines`: the kept entries, the archived ones,
/// after checking that the skeleton is unchanged.
pub(super) fn pruned(text: &str, target_lines: usize) -> (Vec<String>, Vec<String>) {
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

/// The [`entry_key`]s of `texts`.
pub(super) fn keys(texts: &[String]) -> Vec<String> {
    texts.iter().map(|t| entry_key(t)).collect()
}
