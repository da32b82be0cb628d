//! [`MemoryStore`]: the memory file, its archive and its lock, and the updates that keep
//! them consistent: under the lock, read, plan, then append in place or archive and
//! replace, starting over when the file changed under the update.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::archive::append_archive;
use super::document::{MemoryDoc, initial_text};
use super::format::clean_entry;
use super::lines::count_lines;
use super::prune::{MemoryLimits, PruneReport, prune_plan};
use super::{MemoryError, Section};

use crate::instance::Instance;

/// How often an update starts over because the file changed under it before giving up.
const MAX_ATTEMPTS: usize = 5;

/// The memory file, its archive and its lock, and the updates that keep them consistent.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    memory: PathBuf,
    archive: PathBuf,
    lock: PathBuf,
    /// Test seam: runs just before the re-check, after the temp file (and any archive
    /// batch) is written, or before an append in place.
    #[cfg(test)]
    before_replace: Option<fn(&Path, usize)>,
}

/// What one pass of an update decided, possibly borrowing from the document it read.
pub(super) struct Plan<'a> {
    /// The new memory text, `None` to leave the file as it is.
    pub(super) text: Option<String>,
    /// Entries to append to the archive before the memory file is replaced, formatted
    /// and grouped under `### Section` headings, in pieces to write one after the other
    /// (see [`archive_batch`](super::archive::archive_batch)); none for no entries.
    /// `report.archived` counts them.
    pub(super) archive: Vec<Cow<'a, str>>,
    pub(super) report: PruneReport,
}

impl Plan<'_> {
    pub(super) fn into_owned(self) -> Plan<'static> {
        Plan {
            text: self.text,
            archive: self
                .archive
                .into_iter()
                .map(|piece| Cow::Owned(piece.into_owned()))
                .collect(),
            report: self.report,
        }
    }
}

impl MemoryStore {
    /// The one store of an instance: its memory file, its archive and its one lock
    /// ([`Instance::memory_lock`]), whoever writes (cycles, `memory add`, `resume`, MCP).
    pub fn of(inst: &Instance) -> Self {
        MemoryStore {
            memory: inst.memory(),
            archive: inst.archive(),
            lock: inst.memory_lock(),
            #[cfg(test)]
            before_replace: None,
        }
    }

    pub fn memory_path(&self) -> &Path {
        &self.memory
    }

    pub fn archive_path(&self) -> &Path {
        &self.archive
    }

    /// The memory file as it is now; a missing file reads as [`initial_text`]. Readers
    /// need no lock: writers replace the file by rename or append at its end, so a read
    /// gets the old text whole (during an append, followed by part of the new entries).
    pub fn read(&self) -> Result<MemoryDoc, MemoryError> {
        let text = read_optional(&self.memory)?.unwrap_or_else(initial_text);
        Ok(MemoryDoc::from_text(text))
    }

    /// Appends entries at the end of their sections. Empty texts are skipped.
    pub fn add(&self, entries: &[(Section, String)]) -> Result<(), MemoryError> {
        let entries = clean_entries(entries);
        if entries.is_empty() {
            return Ok(());
        }
        self.update(|current| {
            let text = self.added(&or_initial(current), &entries)?.render();
            Ok(Plan {
                report: PruneReport {
                    lines_before: count_lines(&text),
                    lines_after: count_lines(&text),
                    ..PruneReport::default()
                },
                text: Some(text),
                archive: Vec::new(),
            })
        })
        .map(|_| ())
    }

    /// Prunes when the file has more than `max_lines` lines (always when `force`),
    /// down to `target_lines`.
    pub fn prune(&self, limits: MemoryLimits, force: bool) -> Result<PruneReport, MemoryError> {
        self.update(|current| {
            let Some(current) = current else {
                return Ok(Plan {
                    text: None,
                    archive: Vec::new(),
                    report: PruneReport::default(),
                });
            };
            Ok(prune_plan(current, limits, force))
        })
    }

    /// Adds entries and prunes if the result is over `max_lines`, in one update (one
    /// rename, or one append when nothing is pruned and the entries go at the end).
    /// Without a prune the report's two line counts are the file after adding.
    pub fn add_and_prune(
        &self,
        entries: &[(Section, String)],
        limits: MemoryLimits,
    ) -> Result<PruneReport, MemoryError> {
        let entries = clean_entries(entries);
        self.update(|current| {
            let doc = or_initial(current);
            let doc = if entries.is_empty() {
                doc
            } else {
                Cow::Owned(self.added(&doc, &entries)?)
            };
            let mut plan = match &doc {
                Cow::Borrowed(doc) => prune_plan(doc, limits, false),
                Cow::Owned(doc) => prune_plan(doc, limits, false).into_owned(),
            };
            if plan.text.is_none() && !entries.is_empty() {
                plan.text = Some(doc.render());
            }
            Ok(plan)
        })
    }

    fn added(
        &self,
        doc: &MemoryDoc,
        entries: &[(Section, String)],
    ) -> Result<MemoryDoc, MemoryError> {
        doc.with_added(entries)
            .map_err(|section| MemoryError::Layout {
                path: self.memory.clone(),
                section,
            })
    }

    /// Read, plan, then append in place, or archive and replace: under the lock, starting
    /// over when the memory file changed between the read and the write. `decide` gets
    /// the file parsed, `None` when there is none.
    fn update(
        &self,
        mut decide: impl for<'d> FnMut(Option<&'d MemoryDoc>) -> Result<Plan<'d>, MemoryError>,
    ) -> Result<PruneReport, MemoryError> {
        if let Some(parent) = self.lock.parent() {
            fs::create_dir_all(parent).map_err(|source| MemoryError::Lock {
                path: self.lock.clone(),
                source,
            })?;
        }
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|source| MemoryError::Lock {
                path: self.lock.clone(),
                source,
            })?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _guard = lock.write().map_err(|source| MemoryError::Lock {
            path: self.lock.clone(),
            source,
        })?;
        // Holding the lock, no other store is between its temp write and its rename:
        // any temp file left is from a writer that died.
        self.remove_stale_temps();

        for attempt in 0..MAX_ATTEMPTS {
            // Parsed in place: the text is the document's, not a copy of a file that can
            // be megabytes.
            let current = read_optional(&self.memory)?.map(MemoryDoc::from_text);
            let plan = decide(current.as_ref())?;
            let original = current.as_ref().map(|doc| doc.text.as_str());
            let archive = || -> Result<(), MemoryError> {
                if !plan.archive.is_empty() {
                    append_archive(&self.archive, plan.report.archived, &plan.archive)?;
                    tracing::info!(
                        archive = %self.archive.display(),
                        entries = plan.report.archived,
                        "archived pruned memory entries"
                    );
                }
                Ok(())
            };
            let text = match &plan.text {
                Some(text) if original != Some(text.as_str()) => text,
                _ => {
                    archive()?;
                    return Ok(plan.report);
                }
            };
            // Entries added at the end of the file, nothing removed: appended in place.
            if plan.archive.is_empty()
                && let Some(original) = original
                && text.len() > original.len()
                && text.starts_with(original)
            {
                #[cfg(test)]
                if let Some(hook) = self.before_replace {
                    hook(&self.memory, attempt);
                }
                if self.append_if_unchanged(original, &text[original.len()..])? {
                    return Ok(plan.report);
                }
                tracing::warn!(
                    file = %self.memory.display(),
                    attempt,
                    "memory file changed while it was being updated; starting over"
                );
                continue;
            }
            let temp = if plan.archive.is_empty() {
                self.write_temp(text)?
            } else {
                // The archive batch and the new file are independent until the rename:
                // both are written and flushed side by side, and both are durable before
                // it, which is the order SPEC §5 asks for. A prune waits for one flush
                // instead of two (figure 4 in BENCHMARKS.md).
                std::thread::scope(|scope| {
                    let archiving = scope.spawn(archive);
                    let temp = self.write_temp(text);
                    let archived = archiving
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    match (archived, temp) {
                        (Ok(()), temp) => temp,
                        (Err(e), Ok(temp)) => {
                            let _ = fs::remove_file(&temp);
                            Err(e)
                        }
                        (Err(e), Err(_)) => Err(e),
                    }
                })?
            };
            #[cfg(test)]
            if let Some(hook) = self.before_replace {
                hook(&self.memory, attempt);
            }
            if !file_holds(&self.memory, original)? {
                let _ = fs::remove_file(&temp);
                tracing::warn!(
                    file = %self.memory.display(),
                    attempt,
                    "memory file changed while it was being updated; starting over"
                );
                continue;
            }
            fs::rename(&temp, &self.memory).map_err(|source| {
                let _ = fs::remove_file(&temp);
                MemoryError::Write {
                    path: self.memory.clone(),
                    source,
                }
            })?;
            sync_parent(&self.memory)?;
            return Ok(plan.report);
        }
        Err(MemoryError::KeepsChanging {
            path: self.memory.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Appends `suffix` to the memory file if it still holds exactly `original`: one write
    /// and one fdatasync, where a replacement costs a temp file, its fsync, a rename and a
    /// directory fsync (figure 5 in BENCHMARKS.md: the cycle's System Updates entries go
    /// at the end of the file). `false` when it changed since it was read (nothing is
    /// written) or was replaced while this wrote (the suffix went to the old file); the
    /// caller starts over. A crash during
    /// the write leaves a part of the suffix: text, never a lost entry of the original.
    fn append_if_unchanged(&self, original: &str, suffix: &str) -> Result<bool, MemoryError> {
        use std::os::unix::fs::MetadataExt;
        let write_error = |source| MemoryError::Write {
            path: self.memory.clone(),
            source,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.memory)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(write_error(source)),
        };
        if !reads_as(&mut file, original.as_bytes()).unwrap_or(false) {
            return Ok(false);
        }
        if let Err(source) = file.write_all(suffix.as_bytes()) {
            // Nothing half-written stays behind: the entries are retried whole.
            let _ = file.set_len(original.len() as u64);
            return Err(write_error(source));
        }
        file.sync_data().map_err(write_error)?;
        // An editor that replaced the file by rename meanwhile has our lines in the old
        // inode, not at the path.
        let ours = file.metadata().map_err(write_error)?;
        Ok(fs::metadata(&self.memory)
            .is_ok_and(|at_path| (at_path.dev(), at_path.ino()) == (ours.dev(), ours.ino())))
    }

    fn temp_prefix(&self) -> String {
        let name = self
            .memory
            .file_name()
            .map_or_else(|| "memory".into(), |n| n.to_string_lossy().into_owned());
        format!(".{name}.tmp-")
    }

    /// Writes and fsyncs `text` to a new temp file next to the memory file.
    fn write_temp(&self, text: &str) -> Result<PathBuf, MemoryError> {
        let stamp = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let temp = self.memory.with_file_name(format!(
            "{}{}-{stamp}",
            self.temp_prefix(),
            std::process::id()
        ));
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            if let Ok(meta) = fs::metadata(&self.memory) {
                file.set_permissions(meta.permissions())?;
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&temp);
            MemoryError::Write {
                path: temp.clone(),
                source,
            }
        })?;
        Ok(temp)
    }

    fn remove_stale_temps(&self) {
        let dir = match self.memory.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let prefix = self.temp_prefix();
        let Ok(listing) = fs::read_dir(dir) else {
            return;
        };
        for entry in listing.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::debug!(file = %entry.path().display(), "removing stale memory temp file");
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The document `update` found, or a new file's when there was none.
fn or_initial(current: Option<&MemoryDoc>) -> Cow<'_, MemoryDoc> {
    current.map_or_else(
        || Cow::Owned(MemoryDoc::from_text(initial_text())),
        Cow::Borrowed,
    )
}

fn clean_entries(entries: &[(Section, String)]) -> Vec<(Section, String)> {
    entries
        .iter()
        .filter_map(|(s, t)| clean_entry(t).map(|t| (*s, t)))
        .collect()
}

/// Whether the file at `path` holds exactly `expected` (`None`: there is no file).
/// Compared as it is read, rather than read whole into a new string: this runs before
/// every replace, over a file that can be megabytes.
fn file_holds(path: &Path, expected: Option<&str>) -> Result<bool, MemoryError> {
    let error = |source| MemoryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(expected.is_none()),
        Err(source) => return Err(error(source)),
    };
    let Some(expected) = expected else {
        return Ok(false);
    };
    // A regular file of another size differs without reading it.
    let meta = file.metadata().map_err(error)?;
    if meta.is_file() && meta.len() != expected.len() as u64 {
        return Ok(false);
    }
    reads_as(&mut file, expected.as_bytes()).map_err(error)
}

/// Whether reading `file` from where it is to its end gives exactly `expected`.
fn reads_as(file: &mut File, expected: &[u8]) -> io::Result<bool> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut rest = expected;
    loop {
        let n = match file.read(&mut buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(rest.is_empty());
        }
        match rest.strip_prefix(&buffer[..n]) {
            Some(after) => rest = after,
            None => return Ok(false),
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, MemoryError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MemoryError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Fsyncs the directory holding `path`, so a rename or creation in it is durable.
pub(super) fn sync_parent(path: &Path) -> Result<(), MemoryError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| MemoryError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::test_support::keys;
    use crate::memory::{archived_entries, entry_key};

    fn store(dir: &Path) -> MemoryStore {
        MemoryStore::of(&Instance::new(dir))
    }

    /// Two constructors once locked two different files (`.loop-orchestrator/memory.lock`
    /// and `.loop-orchestrator/locks/memory.lock`), so two writers could both hold "the"
    /// memory lock. Every writer's store now waits for the instance's one lock.
    #[test]
    fn a_write_waits_for_the_instances_one_memory_lock() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::new(dir.path());
        std::fs::create_dir_all(inst.locks_dir()).unwrap();
        let file = std::fs::File::create(inst.memory_lock()).unwrap();
        let mut held = fd_lock::RwLock::new(file);
        let guard = held.write().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let inst = inst.clone();
            std::thread::spawn(move || {
                MemoryStore::of(&inst)
                    .add(&[(Section::Commands, "cargo test".into())])
                    .unwrap();
                tx.send(()).unwrap();
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the write went ahead while another process held the memory lock"
        );
        drop(guard);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the write goes ahead once the lock is free");
        writer.join().unwrap();
        assert!(
            std::fs::read_to_string(inst.memory())
                .unwrap()
                .contains("- cargo test")
        );
    }

    #[test]
    fn add_formats_entries_and_creates_missing_sections_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[
                (Section::SystemUpdates, "- first\nsecond\n\n- nested".into()),
                (Section::ImplementationPatterns, "pattern".into()),
                (Section::Commands, "  \n".into()),
            ])
            .unwrap();
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert_eq!(
            text,
            "# Persistent Memory\n## Implementation Patterns\n- pattern\n## Commands\n## System Updates\n- first\n  second\n\n  - nested\n"
        );
        let doc = store.read().unwrap();
        assert_eq!(
            doc.entries(Section::SystemUpdates),
            ["first\nsecond\n\n- nested"]
        );

        fs::write(
            store.memory_path(),
            "# Mine\nintro\n\n## System Updates\n- s\n",
        )
        .unwrap();
        store
            .add(&[
                (Section::Commands, "c".into()),
                (Section::ImplementationPatterns, "p".into()),
                (Section::SystemUpdates, "s2".into()),
            ])
            .unwrap();
        assert_eq!(
            fs::read_to_string(store.memory_path()).unwrap(),
            "# Mine\nintro\n\n## Implementation Patterns\n- p\n## Commands\n- c\n## System Updates\n- s\n- s2\n"
        );

        fs::write(
            store.memory_path(),
            "# Mine\n## commands\n- a\n\n```\n- code\n```\n\n## Notes",
        )
        .unwrap();
        store.add(&[(Section::Commands, "b".into())]).unwrap();
        assert_eq!(
            fs::read_to_string(store.memory_path()).unwrap(),
            "# Mine\n## commands\n- a\n\n```\n- code\n```\n- b\n\n## Notes"
        );
    }

    #[test]
    fn add_after_an_html_block_separates_it_with_a_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        fs::write(
            store.memory_path(),
            "## Commands\n<div>\nraw\n</div>\n\n## System Updates\n",
        )
        .unwrap();
        store.add(&[(Section::Commands, "c".into())]).unwrap();
        let doc = store.read().unwrap();
        assert_eq!(doc.entries(Section::Commands), ["c"]);
        assert!(
            doc.render().contains("</div>\n\n- c\n\n## System Updates"),
            "{:?}",
            doc.render()
        );
    }

    #[test]
    fn prune_archives_before_replacing_and_archive_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..50)
            .map(|n| (Section::ALL[n % 3], format!("entry {n}\nwith detail {n}")))
            .collect();
        store.add(&entries).unwrap();
        let before = store.read().unwrap().line_count();
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 300,
                    target_lines: 40,
                },
                false,
            )
            .unwrap();
        assert_eq!(report.archived, 0, "not forced and under max_lines");
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 300,
                    target_lines: 40,
                },
                true,
            )
            .unwrap();
        assert_eq!(report.lines_before, before);
        assert!(report.lines_after <= 40);
        let kept = store.read().unwrap();
        let archive = fs::read_to_string(store.archive_path()).unwrap();
        assert!(archive.starts_with("# Persistent Memory Archive\n\n## Pruned "));
        assert!(archive.contains("### System Updates\n- entry 2\n  with detail 2\n"));
        let archived = archived_entries(&archive);
        assert_eq!(archived.len(), report.archived);
        let mut all: Vec<String> = kept
            .all_entries()
            .iter()
            .map(|e| entry_key(&e.text))
            .collect();
        all.extend(keys(&archived));
        for (_, text) in &entries {
            assert!(all.contains(&entry_key(text)), "{text} lost");
        }
        // A second batch appends under its own heading.
        store.add(&entries).unwrap();
        store.prune(MemoryLimits::default(), true).unwrap();
        let archive = fs::read_to_string(store.archive_path()).unwrap();
        assert_eq!(archive.matches("\n## Pruned ").count(), 2);
        assert_eq!(archive.matches("# Persistent Memory Archive").count(), 1);
    }

    #[test]
    fn missing_file_reads_as_initial_text_and_prune_leaves_it_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        assert_eq!(store.read().unwrap().render(), initial_text());
        let report = store.prune(MemoryLimits::default(), true).unwrap();
        assert_eq!(report, PruneReport::default());
        assert!(!store.memory_path().exists());
        assert!(!store.archive_path().exists());
    }

    fn append_entry_on_first_attempt(memory: &Path, attempt: usize) {
        if attempt == 0 {
            let mut text = fs::read_to_string(memory).unwrap();
            text.push_str("- written by someone else\n");
            fs::write(memory, text).unwrap();
        }
    }

    /// Fails unless the archive next to `memory` already holds the entries being pruned
    /// and the temp file is written: both come before the rename.
    fn archive_and_temp_are_written(memory: &Path, _attempt: usize) {
        let dir = memory.parent().unwrap();
        let archive =
            fs::read_to_string(dir.join("persistent-memory.archive.md")).unwrap_or_default();
        let archived = keys(&archived_entries(&archive));
        assert!(
            archived.contains(&"old 0".to_string()),
            "archive: {archive:?}"
        );
        let temps = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".persistent-memory.md.tmp")
            })
            .count();
        assert_eq!(temps, 1, "the new file waits in its temp file");
    }

    #[test]
    fn a_prune_archives_and_writes_the_new_file_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let mut text = initial_text();
        for n in 0..20 {
            text.push_str(&format!("- old {n}\n"));
        }
        fs::write(store.memory_path(), text).unwrap();
        store.before_replace = Some(archive_and_temp_are_written);
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 12,
                },
                true,
            )
            .unwrap();
        assert!(report.archived > 0);
        assert!(
            !store
                .read()
                .unwrap()
                .entries(Section::SystemUpdates)
                .contains(&"old 0".to_string())
        );
    }

    fn append_entry_always(memory: &Path, attempt: usize) {
        let mut text = fs::read_to_string(memory).unwrap();
        text.push_str(&format!("- racing writer {attempt}\n"));
        fs::write(memory, text).unwrap();
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn entries_added_at_the_end_are_appended_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "first".into())])
            .unwrap();
        let before = fs::read_to_string(store.memory_path()).unwrap();
        let file = inode(store.memory_path());
        store
            .add(&[
                (Section::SystemUpdates, "second".into()),
                (Section::SystemUpdates, "third\nwith a second line".into()),
            ])
            .unwrap();
        let after = fs::read_to_string(store.memory_path()).unwrap();
        assert_eq!(
            after,
            format!("{before}- second\n- third\n  with a second line\n")
        );
        assert_eq!(inode(store.memory_path()), file, "appended, not replaced");
        // An entry of an earlier section is inserted: the file is replaced.
        store.add(&[(Section::Commands, "cmd".into())]).unwrap();
        assert_ne!(inode(store.memory_path()), file);
        assert_eq!(store.read().unwrap().entries(Section::Commands), ["cmd"]);
    }

    #[test]
    fn change_before_an_append_starts_over_and_keeps_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "base".into())])
            .unwrap();
        store.before_replace = Some(append_entry_on_first_attempt);
        store
            .add(&[(Section::SystemUpdates, "mine".into())])
            .unwrap();
        assert_eq!(
            store.read().unwrap().entries(Section::SystemUpdates),
            ["base", "written by someone else", "mine"]
        );
    }

    #[test]
    fn a_file_that_keeps_changing_during_appends_is_an_error_not_a_lost_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store
            .add(&[(Section::SystemUpdates, "base".into())])
            .unwrap();
        store.before_replace = Some(append_entry_always);
        let error = store
            .add(&[(Section::SystemUpdates, "mine".into())])
            .unwrap_err();
        assert!(
            matches!(error, MemoryError::KeepsChanging { .. }),
            "{error}"
        );
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(!text.contains("mine"), "{text}");
        assert!(text.contains("racing writer 4"), "{text}");
    }

    #[test]
    fn change_between_read_and_replace_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..30)
            .map(|n| (Section::SystemUpdates, format!("u{n}")))
            .collect();
        store.add(&entries).unwrap();
        store.before_replace = Some(append_entry_on_first_attempt);
        store.add(&[(Section::Commands, "mine".into())]).unwrap();
        let doc = store.read().unwrap();
        assert_eq!(doc.entries(Section::Commands), ["mine"]);
        assert_eq!(
            doc.entries(Section::SystemUpdates)
                .last()
                .map(String::as_str),
            Some("written by someone else")
        );

        fs::write(store.memory_path(), initial_text() + "- a\n- b\n- c\n").unwrap();
        let report = store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 4,
                },
                true,
            )
            .unwrap();
        let doc = store.read().unwrap();
        let archived = archived_entries(&fs::read_to_string(store.archive_path()).unwrap());
        // The restart re-planned from the file that includes the other writer's entry.
        assert_eq!(doc.line_count(), 4, "{}", doc.render());
        assert_eq!(report.archived, 4);
        for text in ["a", "b", "c", "written by someone else"] {
            assert!(archived.iter().any(|t| t == text), "{text} not archived");
        }
    }

    #[test]
    fn a_file_that_keeps_changing_is_an_error_not_a_lost_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        store.add(&[(Section::Commands, "base".into())]).unwrap();
        store.before_replace = Some(append_entry_always);
        let error = store
            .add(&[(Section::Commands, "mine".into())])
            .unwrap_err();
        assert!(
            matches!(error, MemoryError::KeepsChanging { attempts: 5, .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("persistent-memory.md changed during each of 5")
        );
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(!text.contains("mine"));
        assert!(
            text.contains("racing writer 4"),
            "the other writer's edits survive"
        );
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn stale_temp_files_are_removed_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let stale = dir.path().join(".persistent-memory.md.tmp-1-2");
        fs::write(&stale, "half").unwrap();
        store.add(&[(Section::Commands, "c".into())]).unwrap();
        assert!(!stale.exists());
        assert!(Instance::new(dir.path()).memory_lock().exists());
    }

    #[test]
    fn add_and_prune_prunes_only_over_max() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let limits = MemoryLimits {
            max_lines: 20,
            target_lines: 10,
        };
        for n in 0..16 {
            let report = store
                .add_and_prune(&[(Section::SystemUpdates, format!("u{n}"))], limits)
                .unwrap();
            assert_eq!(report.archived, 0);
            assert_eq!(report.lines_after, 5 + n);
        }
        let report = store
            .add_and_prune(&[(Section::SystemUpdates, "u16".into())], limits)
            .unwrap();
        assert_eq!(
            (report.lines_before, report.lines_after, report.archived),
            (21, 10, 11)
        );
        assert_eq!(
            store
                .read()
                .unwrap()
                .entries(Section::SystemUpdates)
                .last()
                .map(String::as_str),
            Some("u16")
        );
    }

    #[test]
    fn add_turns_a_bare_cr_in_an_entry_into_a_continuation_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .add(&[(Section::Commands, "first\rsecond\r- not an entry\r".into())])
            .unwrap();
        let text = fs::read_to_string(store.memory_path()).unwrap();
        assert!(
            text.contains("## Commands\n- first\n  second\n  - not an entry\n## System"),
            "{text:?}"
        );
        assert_eq!(
            store.read().unwrap().entries(Section::Commands),
            ["first\nsecond\n- not an entry"]
        );
    }

    #[test]
    fn an_edit_that_keeps_the_length_still_starts_the_replace_over() {
        fn swap_a_letter_on_first_attempt(memory: &Path, attempt: usize) {
            if attempt == 0 {
                let text = fs::read_to_string(memory).unwrap();
                fs::write(memory, text.replace("- keep me", "- kept me")).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let entries: Vec<(Section, String)> = (0..30)
            .map(|n| (Section::SystemUpdates, format!("u{n}")))
            .collect();
        store.add(&entries).unwrap();
        store.add(&[(Section::Commands, "keep me".into())]).unwrap();
        store.before_replace = Some(swap_a_letter_on_first_attempt);
        store
            .prune(
                MemoryLimits {
                    max_lines: 0,
                    target_lines: 10,
                },
                true,
            )
            .unwrap();
        let doc = store.read().unwrap();
        assert_eq!(
            doc.entries(Section::Commands),
            ["kept me"],
            "{}",
            doc.render()
        );
    }
}
