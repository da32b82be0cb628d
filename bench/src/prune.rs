//! Figure 4: memory prune. A memory file of N lines (three sections; most of it System
//! Updates entries as the supervisor writes them) is pruned to the default target with
//! `MemoryStore::prune(limits, true)`, which reads, parses, archives (fsync), writes a
//! temp file (fsync), renames and fsyncs the directory; the archive is there, as every
//! prune after an instance's first finds it. The baseline reads the same file and
//! iterates every pulldown-cmark event. A second line times the first prune, which also
//! creates the archive and fsyncs its directory; a third `MemoryDoc::parse` alone, and a
//! fourth the whole prune minus its I/O (`MemoryDoc::prune_dry_run` on
//! the parsed file: parse, plan, layout check, new text and archive batch), against the
//! same baseline, to tell computing from reading, writing and syncing.

use std::path::Path;
use std::time::Instant;

use loop_orchestrator::memory::{MemoryDoc, MemoryLimits, MemoryStore, PruneReport};
use pulldown_cmark::{Options, Parser};

use crate::Size;
use crate::report::{Figure, Line, Verdict};
use crate::stats::{self, Samples};
use crate::sys;

/// The archive as an earlier prune leaves it: its title and one batch.
const EARLIER_ARCHIVE: &str = "# Persistent Memory Archive\n\n\
## Pruned 2026-11-20T09:00:00.000Z (2 entries)\n\
### System Updates\n\
- 2026-11-20T08:50:00Z [main-loop/validation] ok in 12.3s: 42 tests passed\n\
- 2026-11-20T09:00:00Z [main-loop/quality] ok in 0.2s\n";

const MODES: [&str; 5] = [
    "implementation",
    "validation",
    "quality",
    "integration",
    "planning",
];

/// A memory file of exactly `lines` lines: 5% Implementation Patterns entries (two
/// lines each), 5% Commands, the rest System Updates, oldest first.
pub fn memory_text(lines: usize) -> String {
    let mut out = String::from("# Persistent Memory\n## Implementation Patterns\n");
    let mut used = 2;
    let patterns = lines / 20;
    let mut i = 0;
    while used + 2 <= 2 + patterns {
        out.push_str(&format!(
            "- Pattern {i}: keep row encoding in one place; readers skip torn lines\n  \
             (see timing.rs, added after cycle {i})\n"
        ));
        used += 2;
        i += 1;
    }
    out.push_str("## Commands\n");
    used += 1;
    for i in 0..lines / 20 {
        out.push_str(&format!(
            "- `cargo test --lib timing::{i}` runs one module's tests\n"
        ));
        used += 1;
    }
    out.push_str("## System Updates\n");
    used += 1;
    // A small deterministic generator so durations and counts vary like real runs.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i = 0u64;
    while used < lines {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let mode = MODES[(i % 5) as usize];
        let secs = 1_790_000_000 + i * 120;
        let stamp = chrono::DateTime::from_timestamp(secs as i64, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let tenths = (state >> 33) % 2000;
        let tests = 40 + (state >> 50) % 20;
        out.push_str(&format!(
            "- {stamp} [main-loop/{mode}] ok in {}.{}s: {tests} tests passed\n",
            tenths / 10,
            tenths % 10
        ));
        used += 1;
        i += 1;
    }
    out
}

/// Leaves `text` in the memory file and `archive` in the archive (`None`: no archive, as
/// before an instance's first prune), flushed with their directory: a prune finds files
/// written long before, not megabytes of the harness's own writes still on their way to
/// the disk.
fn prepare(store: &MemoryStore, text: &str, archive: Option<&str>) -> Result<(), String> {
    let sync = |path: &Path| std::fs::File::open(path)?.sync_all();
    let written = (|| {
        std::fs::write(store.memory_path(), text)?;
        sync(store.memory_path())?;
        match archive {
            Some(archive) => {
                std::fs::write(store.archive_path(), archive)?;
                sync(store.archive_path())?;
            }
            None => match std::fs::remove_file(store.archive_path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
        sync(store.memory_path().parent().unwrap_or(Path::new(".")))
    })();
    written.map_err(|e| format!("cannot prepare the memory file: {e}"))
}

/// A forced prune to `limits`, timed: milliseconds and the report.
fn timed_prune(store: &MemoryStore, limits: MemoryLimits) -> Result<(f64, PruneReport), String> {
    let t = Instant::now();
    let report = store.prune(limits, true).map_err(|e| e.to_string())?;
    Ok((t.elapsed().as_secs_f64() * 1e3, report))
}

fn baseline_parse(path: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(Parser::new_ext(&text, Options::empty())
        .into_offset_iter()
        .count())
}

struct Case {
    lines: usize,
    runs: usize,
    target_ms: Option<f64>,
}

pub fn figure(size: Size) -> Figure {
    let cases = match size {
        Size::Full => [
            Case {
                lines: 300,
                runs: 31,
                target_ms: Some(1.0),
            },
            Case {
                lines: 100_000,
                runs: 9,
                target_ms: Some(50.0),
            },
        ],
        Size::Quick => [
            Case {
                lines: 300,
                runs: 11,
                target_ms: Some(1.0),
            },
            Case {
                lines: 100_000,
                runs: 3,
                target_ms: Some(50.0),
            },
        ],
        Size::Smoke => [
            Case {
                lines: 300,
                runs: 3,
                target_ms: None,
            },
            Case {
                lines: 10_000,
                runs: 1,
                target_ms: None,
            },
        ],
    };
    let limits = MemoryLimits::default();
    let mut figure = Figure::new(
        4,
        "Memory prune",
        format!(
            "`MemoryStore::prune(limits, true)` of a generated memory file (three sections, \
             90% System Updates entries) down to {} lines, including its reads, archive \
             append, fsyncs and rename; a fresh memory file before each run, and the archive \
             an earlier prune left (one batch). A second line times the first prune of an \
             instance, which also creates the archive and flushes its directory. Baseline: \
             read the same file and iterate every pulldown-cmark event. Median of {}/{} runs.",
            limits.target_lines, cases[0].runs, cases[1].runs
        ),
    );
    let dir = match sys::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            figure.errors.push(e);
            return figure;
        }
    };
    let store = MemoryStore::of(&loop_orchestrator::instance::Instance::new(dir.path()));
    for case in &cases {
        let text = memory_text(case.lines);
        let label = format!("{} lines", case.lines);
        eprintln!("  figure 4: {label}");
        let mut prune_ms = Vec::new();
        let mut parse_ms = Vec::new();
        let mut compute_ms = Vec::new();
        let mut base_ms = Vec::new();
        let mut first_ms = Vec::new();
        let mut failed = None;
        for _ in 0..case.runs {
            // The first prune of an instance creates the archive (one more flush, of
            // the directory); every later one appends to it.
            let prepared = prepare(&store, &text, None)
                .and_then(|()| timed_prune(&store, limits))
                .and_then(|(ms, _)| {
                    first_ms.push(ms);
                    prepare(&store, &text, Some(EARLIER_ARCHIVE))
                });
            if let Err(e) = prepared {
                failed = Some(e);
                break;
            }
            let t = Instant::now();
            let base = baseline_parse(store.memory_path());
            base_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if let Err(e) = base {
                failed = Some(e);
                break;
            }
            let t = Instant::now();
            let doc = MemoryDoc::parse(&text);
            parse_ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(doc.entry_count());
            let t = Instant::now();
            let dry = MemoryDoc::parse(&text).prune_dry_run(limits, true);
            compute_ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(dry);
            match timed_prune(&store, limits) {
                Ok((ms, r)) if r.lines_after <= limits.target_lines => prune_ms.push(ms),
                Ok((_, r)) => {
                    failed = Some(format!(
                        "pruned to {} lines, target {}",
                        r.lines_after, limits.target_lines
                    ));
                    break;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            figure.errors.push(format!("{label}: {e}"));
            continue;
        }
        let prune = Samples::new(prune_ms).median();
        let parse = Samples::new(parse_ms).median();
        let compute = Samples::new(compute_ms).median();
        let base = Samples::new(base_ms).median();
        let first = Samples::new(first_ms).median();
        let (target, verdict) = match case.target_ms {
            Some(t) => (format!("≤ {}", stats::ms(t)), Verdict::judge(prune <= t)),
            None => ("–".into(), Verdict::Info),
        };
        figure.lines.push(
            Line::new(&label, "prune, median")
                .ours(stats::ms(prune))
                .baseline(stats::ms(base))
                .ratio(stats::ratio(prune, base))
                .target(target, verdict),
        );
        figure.lines.push(
            Line::new(&label, "first prune (creates the archive), median")
                .ours(stats::ms(first))
                .baseline(stats::ms(base))
                .ratio(stats::ratio(first, base)),
        );
        figure.lines.push(
            Line::new(&label, "`MemoryDoc::parse` only (no I/O)")
                .ours(stats::ms(parse))
                .baseline(stats::ms(base))
                .ratio(stats::ratio(parse, base)),
        );
        figure.lines.push(
            Line::new(&label, "prune without I/O (`prune_dry_run`)")
                .ours(stats::ms(compute))
                .baseline(stats::ms(base))
                .ratio(stats::ratio(compute, base)),
        );
    }
    figure
}

#[cfg(test)]
mod tests {
    use super::*;
    use loop_orchestrator::memory::Section;

    #[test]
    fn generated_file_has_the_lines_and_sections_asked_for() {
        for lines in [300, 1000] {
            let text = memory_text(lines);
            let doc = MemoryDoc::parse(&text);
            assert_eq!(doc.line_count(), lines);
            for section in Section::ALL {
                assert!(!doc.entries(section).is_empty(), "{section} has entries");
            }
        }
    }
}
