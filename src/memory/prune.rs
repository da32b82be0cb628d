//! Which entries a prune removes: copies collapsed to the newest, then the oldest by
//! section (System Updates, Commands, Implementation Patterns) until the file fits,
//! keeping any entry whose removal would change how the text around it parses. The
//! plan is computed without I/O; the store carries it out.

use super::Section;
use super::archive::archive_batch;
use super::document::MemoryDoc;
use super::key::{DedupeKey, KeySet, same_key};
use super::store::Plan;

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

/// The plan for pruning `doc`: nothing when it is within `max_lines` and not forced.
pub(super) fn prune_plan(doc: &MemoryDoc, limits: MemoryLimits, force: bool) -> Plan<'_> {
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

impl MemoryDoc {
    /// What [`MemoryStore::prune`](super::MemoryStore::prune) would do to this document,
    /// without touching a file: the same plan, new text and archive batch, minus the I/O.
    #[cfg(any(test, feature = "testing"))]
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
}

/// The `indices` of `doc`'s entries in three lists, one per section in [`Section::ALL`]
/// order: one pass over the entries rather than one per section.
pub(super) fn by_section(doc: &MemoryDoc, indices: impl Iterator<Item = usize>) -> [Vec<usize>; 3] {
    let mut groups: [Vec<usize>; 3] = Default::default();
    for index in indices {
        groups[doc.entries[index].section.index()].push(index);
    }
    groups
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::memory::archived_entries;
    use crate::memory::document::initial_text;
    use crate::memory::test_support::{forced_prune, keys, pruned};

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
}
