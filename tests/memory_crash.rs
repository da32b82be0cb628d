//! The memory file under load and under SIGKILL, through the real binary: pruning keeps
//! every non-entry byte, ends under the target, and never loses an entry.

use std::collections::HashSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use loop_orchestrator::memory::{
    MemoryDoc, MemoryLimits, MemoryStore, Section, archived_entries, entry_key,
};

const BIN: &str = env!("CARGO_BIN_EXE_loop-orchestrator");

/// The parts of the file that are not entries; entries get appended to the sections.
const TEMPLATE: &str = "# Persistent Memory\n\
Preamble: what this loop has learned.\n\
Keep it short; the supervisor prunes it.\n\
\n\
## Implementation Patterns\n\
## Commands\n\
## Notes\n\
- a note outside the three sections\n\
## System Updates\n\
Status lines from every mode run:\n\
\n\
```text\n\
- not an entry\n\
- also not an entry\n\
```\n";

fn memory(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .arg("memory")
        .args(args)
        .output()
        .expect("run loop-orchestrator");
    assert!(
        output.status.success(),
        "memory {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// xorshift64: reproducible delays and sizes without a rand dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn section_for(n: usize) -> Section {
    match n % 10 {
        0..=5 => Section::SystemUpdates,
        6 | 7 => Section::Commands,
        _ => Section::ImplementationPatterns,
    }
}

fn entry_text(round: usize, n: usize) -> String {
    let (minute, second) = (n / 60 % 60, n % 60);
    match section_for(n) {
        Section::SystemUpdates if n.is_multiple_of(97) => {
            // Identical apart from the timestamp: collapses to the newest copy.
            format!(
                "2026-11-21T10:{minute:02}:{second:02}.250Z [main-loop/quality] repeated status"
            )
        }
        Section::SystemUpdates => format!(
            "2026-11-21T10:{minute:02}:{second:02}Z [main-loop/validation] ok in 12.{n}s: round {round} run {n}"
        ),
        Section::Commands => format!("cargo test --test t{n} (round {round})"),
        _ if n % 40 == 8 => format!(
            "pattern {n} of round {round}, over lines:\nkeep the lock while renaming\n- nested point {n}\n  - deeper {n}"
        ),
        _ => format!("pattern {n} of round {round}"),
    }
}

/// Every entry text ever written must be in the memory file or the archive.
fn assert_nothing_lost(dir: &Path, written: &[String]) {
    let memory = fs::read_to_string(dir.join("persistent-memory.md")).expect("memory file");
    let doc = MemoryDoc::parse(&memory);
    let mut present: HashSet<String> = doc
        .all_entries()
        .iter()
        .map(|e| entry_key(&e.text))
        .collect();
    if let Ok(archive) = fs::read_to_string(dir.join("persistent-memory.archive.md")) {
        present.extend(archived_entries(&archive).iter().map(|t| entry_key(t)));
    }
    for text in written {
        assert!(
            present.contains(&entry_key(text)),
            "entry lost: {text:?}\nmemory file:\n{memory}"
        );
    }
}

/// The memory file still holds every heading and non-entry byte of the template.
fn assert_skeleton_intact(dir: &Path) -> MemoryDoc {
    let memory = fs::read_to_string(dir.join("persistent-memory.md")).expect("memory file");
    let doc = MemoryDoc::parse(&memory);
    assert_eq!(
        doc.skeleton(),
        TEMPLATE,
        "non-entry text changed:\n{memory}"
    );
    assert!(memory.contains("```text\n- not an entry\n- also not an entry\n```\n"));
    assert!(memory.contains("## Notes\n- a note outside the three sections\n"));
    doc
}

#[test]
fn thousand_entries_end_under_target() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("persistent-memory.md"), TEMPLATE).unwrap();
    let store = MemoryStore::of(&loop_orchestrator::instance::Instance::new(dir.path()));
    let limits = MemoryLimits::default();
    let written: Vec<String> = (0..1000).map(|n| entry_text(0, n)).collect();
    let mut batch = Vec::new();
    let mut through_binary = 0;
    for (n, text) in written.iter().enumerate() {
        if n % 50 == 49 {
            // Keep file order: flush the library's batch before the binary appends.
            store.add_and_prune(&batch, limits).unwrap();
            batch.clear();
            memory(
                dir.path(),
                &["add", "--section", section_for(n).title(), text.as_str()],
            );
            through_binary += 1;
        } else {
            batch.push((section_for(n), text.clone()));
        }
        if batch.len() == 10 {
            store.add_and_prune(&batch, limits).unwrap();
            batch.clear();
        }
        if n % 100 == 0 {
            // Over max_lines is only ever transient.
            assert!(store.read().unwrap().line_count() <= limits.max_lines + 10);
        }
    }
    store.add_and_prune(&batch, limits).unwrap();
    assert_eq!(through_binary, 20);

    let output = memory(dir.path(), &["prune"]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("pruned"));

    let doc = assert_skeleton_intact(dir.path());
    assert!(
        doc.line_count() <= limits.target_lines,
        "{} lines after prune",
        doc.line_count()
    );
    assert!(doc.entry_count() > 50, "pruned far below the target");
    assert_nothing_lost(dir.path(), &written);

    // Duplicates collapsed to the newest: at most one "repeated status" survives.
    let repeated = doc
        .entries(Section::SystemUpdates)
        .iter()
        .filter(|t| t.ends_with("repeated status"))
        .count();
    assert!(repeated <= 1);
    // The multi-line entry keeps its shape wherever it lives now.
    let archive = fs::read_to_string(dir.path().join("persistent-memory.archive.md")).unwrap();
    let multi = entry_text(0, 8);
    let found = doc
        .entries(Section::ImplementationPatterns)
        .into_iter()
        .chain(archived_entries(&archive))
        .any(|t| t == multi);
    assert!(found, "multi-line entry not found verbatim");
}

/// A memory file of `count` entries over the template, and the entry texts in it.
fn build(round: usize, count: usize) -> (String, Vec<String>) {
    let written: Vec<String> = (0..count).map(|n| entry_text(round, n)).collect();
    let mut text = TEMPLATE.to_string();
    for section in Section::ALL {
        let heading = format!("## {}\n", section.title());
        let block: String = written
            .iter()
            .enumerate()
            .filter(|(n, _)| section_for(*n) == section)
            .map(|(_, t)| {
                let mut lines = t.lines();
                let mut item = format!("- {}\n", lines.next().unwrap_or_default());
                for line in lines {
                    item.push_str(&format!("  {line}\n"));
                }
                item
            })
            .collect();
        let at = if section == Section::SystemUpdates {
            text.len()
        } else {
            text.find(&heading).unwrap() + heading.len()
        };
        text.insert_str(at, &block);
    }
    (text, written)
}

fn prune_duration(dir: &Path, count: usize) -> Duration {
    let (text, _) = build(0, count);
    fs::write(dir.join("persistent-memory.md"), &text).unwrap();
    let _ = fs::remove_file(dir.join("persistent-memory.archive.md"));
    let started = Instant::now();
    memory(dir, &["prune"]);
    started.elapsed()
}

#[test]
fn sigkill_during_prune_loses_nothing() {
    const ROUNDS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    // A prune's wall time (process start included) grows with the file: measure both
    // ends (median of three) and kill each round somewhere inside its expected lifetime.
    let median = |count| {
        let mut runs: Vec<Duration> = (0..3).map(|_| prune_duration(dir.path(), count)).collect();
        runs.sort();
        runs[1].as_micros() as u64
    };
    let (small_us, large_us) = (median(400), median(2000));
    let window_us =
        |count: usize| small_us + large_us.saturating_sub(small_us) * (count as u64 - 400) / 1600;

    let (mut before_archive, mut archived_not_replaced, mut replaced_not_exited) = (0, 0, 0);
    let mut finished = 0;
    for round in 0..ROUNDS {
        let mut rng = Rng::new(round as u64 + 1);
        let dir = tempfile::tempdir().unwrap();
        let count = 400 + rng.below(1601) as usize;
        let (text, written) = build(round, count);
        let memory_path = dir.path().join("persistent-memory.md");
        let archive_path = dir.path().join("persistent-memory.archive.md");
        fs::write(&memory_path, &text).unwrap();

        let mut child = Command::new(BIN)
            .arg("--dir")
            .arg(dir.path())
            .args(["memory", "prune"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if round % 4 == 3 {
            // Every fourth round kills the moment the archive appears: the stretch between
            // the archive write and the replace is short, and random kills on a loaded
            // machine could all land before it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !archive_path.exists() && Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::hint::spin_loop();
            }
        } else {
            thread::sleep(Duration::from_micros(rng.below(window_us(count))));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();

        let killed = status.signal() == Some(libc_sigkill());
        assert!(
            killed || status.success(),
            "round {round}: prune failed: {status}"
        );
        let replaced = fs::read_to_string(&memory_path).unwrap() != text;
        let archived = archive_path.exists();
        match (killed, archived, replaced) {
            (false, _, _) => finished += 1,
            (true, false, false) => before_archive += 1,
            (true, true, false) => archived_not_replaced += 1,
            (true, _, true) => replaced_not_exited += 1,
        }
        assert!(
            !replaced || archived,
            "round {round}: replaced before archiving"
        );

        let doc = assert_skeleton_intact(dir.path());
        if replaced {
            assert!(doc.line_count() <= MemoryLimits::default().target_lines);
        }
        assert_nothing_lost(dir.path(), &written);
    }
    eprintln!(
        "{ROUNDS} rounds, prune took {small_us}..{large_us} us: killed before archiving {before_archive}, \
         between archive and replace {archived_not_replaced}, after replace {replaced_not_exited}, \
         finished {finished}"
    );
    let killed = before_archive + archived_not_replaced + replaced_not_exited;
    assert!(
        killed >= ROUNDS / 10,
        "only {killed} kills landed before exit"
    );
    assert!(
        archived_not_replaced >= 1,
        "no kill landed between the archive write and the replace"
    );
}

/// SIGKILL's number, without a libc dependency for one constant.
fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

#[test]
fn memory_prune_keeps_the_target_given_and_counts_the_duplicates_it_collapsed() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = loop_orchestrator::memory::initial_text();
    for entry in ["- a\n", "- b\n", "- a\n", "- c\n", "- d\n"] {
        text.push_str(entry);
    }
    fs::write(dir.path().join("persistent-memory.md"), &text).unwrap();
    let lines = text.lines().count();
    // Room for all but one line: the older `a` goes as a duplicate, nothing for its age.
    let output = memory(
        dir.path(),
        &["prune", "--target-lines", &(lines - 1).to_string()],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "pruned {lines} → {} lines; 1 entries moved to persistent-memory.archive.md (1 of them older copies of entries kept)",
            lines - 1
        )),
        "{stdout}"
    );
    let doc =
        MemoryDoc::parse(&fs::read_to_string(dir.path().join("persistent-memory.md")).unwrap());
    assert_eq!(doc.entries(Section::SystemUpdates), ["b", "a", "c", "d"]);
    // Two lines fewer: `b`, the oldest, goes for its age.
    let output = memory(
        dir.path(),
        &["prune", "--target-lines", &(lines - 2).to_string()],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("; 1 entries moved to persistent-memory.archive.md\n"),
        "{stdout}"
    );
}
