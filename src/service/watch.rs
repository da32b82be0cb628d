//! The directory watcher behind hot reload.
//!
//! It owns the answer to "did the configuration on disk change", batched so one save is
//! one reload.
//!
//! Rules:
//! - Watch the instance DIRECTORY and `modes/`, never the files: editors save by writing
//!   a temporary file and renaming it over the original (vim, `sed -i`, `jq > tmp && mv`),
//!   which replaces the inode a file watch would be stuck on. The rename that lands on
//!   `schedules.json` is a change like any write.
//! - Relevant paths are exactly `DIR/schedules.json`, `DIR/modes/<name>.md` (names starting
//!   with `.` or `#` excluded) and `DIR/modes` itself. Everything else is ignored: vim's
//!   `4913` probe, `.swp`/`.swx` swap files, `~` backups, emacs `.#x` locks and `#x#`
//!   autosaves, `sedXXXXXX` temporaries, other temp files, and `.loop-orchestrator/`,
//!   which the service itself writes constantly. Both watches are non-recursive.
//! - Reads do not count (opens and read-closes are dropped), so the reload reading the
//!   files cannot trigger another reload.
//! - `modes/` may be created, removed or replaced after start: any create, remove or
//!   rename of `DIR/modes` re-establishes its watch and reports `DIR/modes` plus every
//!   mode file found in it, so files written before the new watch took hold are not lost.
//! - Batching: after the first relevant event, collect until `batch` passes with no new
//!   one, but never longer than [`MAX_BATCH_WAIT`] (or `batch`, if longer) after the first,
//!   so a constant writer cannot starve reloads. A writer that truncates and then writes in
//!   chunks may still be seen half-way; the next batch follows its last write.
//! - A lost event is worse than a spurious reload: when the kernel queue or our channel
//!   overflows, every relevant path is reported.
//! - Events arrive on notify's thread and are filtered there, then forwarded over a tokio
//!   channel; all batching state lives in [`Watcher`], so [`Watcher::changed`] is
//!   cancel-safe inside `tokio::select!`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::instance::Instance;

/// The longest a batch waits after its first event, so a constant writer cannot starve reloads.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

/// Relevant events are few (people save files); this only bounds a pathological writer.
const CHANNEL_CAPACITY: usize = 1024;

/// Why a watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot start a file watcher: {source} (on Linux, raise fs.inotify.max_user_instances)"
    )]
    Init {
        #[source]
        source: notify::Error,
    },
    #[error(
        "cannot watch {path}: {source} (check that the directory exists and is readable; on Linux, raise fs.inotify.max_user_watches if the limit is reached)"
    )]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// What notify's thread hands over.
#[derive(Debug)]
enum Message {
    /// Relevant paths of one event.
    Paths(Vec<PathBuf>),
    /// Events were lost (kernel queue overflow): assume everything changed.
    Rescan,
    /// The watcher reported a failure; logged, then watching goes on.
    Error(notify::Error),
}

/// Watches an instance directory for configuration changes.
#[derive(Debug)]
pub struct Watcher {
    inner: RecommendedWatcher,
    rx: mpsc::Receiver<Message>,
    overflowed: Arc<AtomicBool>,
    schedules: PathBuf,
    modes: PathBuf,
    batch: Duration,
    pending: BTreeSet<PathBuf>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Watcher {
    /// Watches `dir` (non-recursively) and `dir/modes` (non-recursively; when `modes/` is created or
    /// replaced later, start watching it). Relevant paths: `dir/schedules.json` and `dir/modes/*.md`.
    pub fn new(inst: &Instance, batch: Duration) -> Result<Watcher, WatchError> {
        let dir = inst.root();
        let schedules = inst.schedules();
        let modes = inst.modes_dir();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));

        let filter = Filter {
            schedules: schedules.clone(),
            modes: modes.clone(),
        };
        let flag = Arc::clone(&overflowed);
        let handler = move |event: notify::Result<notify::Event>| {
            let message = match event {
                Ok(event) if event.need_rescan() => Message::Rescan,
                Ok(event) => {
                    let paths = filter.relevant(&event);
                    if paths.is_empty() {
                        return;
                    }
                    Message::Paths(paths)
                }
                Err(error) => Message::Error(error),
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(message) {
                flag.store(true, Ordering::Release);
            }
        };

        let mut inner =
            notify::recommended_watcher(handler).map_err(|source| WatchError::Init { source })?;
        inner
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: dir.to_path_buf(),
                source,
            })?;
        if modes.is_dir() {
            inner
                .watch(&modes, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: modes.clone(),
                    source,
                })?;
        }
        tracing::debug!(dir = %dir.display(), "watching for configuration changes");

        Ok(Watcher {
            inner,
            rx,
            overflowed,
            schedules,
            modes,
            batch,
            pending: BTreeSet::new(),
            first: None,
            last: None,
        })
    }

    /// Waits for the next batch of changes to relevant paths: after the first relevant event, keeps
    /// collecting until `batch` (~100 ms) passes with no new relevant event (cap the whole wait at 1 s
    /// so a constant writer cannot starve reloads), then returns the distinct paths changed.
    ///
    /// The paths are sorted; `dir/modes` itself is among them when the directory appeared,
    /// vanished or was replaced.
    ///
    /// Cancel-safe: events already received stay pending for the next call.
    pub async fn changed(&mut self) -> Vec<PathBuf> {
        loop {
            let Some(deadline) = self.deadline() else {
                match self.rx.recv().await {
                    Some(message) => self.absorb(message),
                    // The sender lives in `inner`, which we own: this cannot happen, but a
                    // busy loop would be the worst answer if it did.
                    None => std::future::pending::<()>().await,
                }
                continue;
            };
            // Checked before waiting: a writer that keeps the channel ready must not
            // postpone the cap.
            if Instant::now() >= deadline {
                return self.take();
            }
            tokio::select! {
                message = self.rx.recv() => match message {
                    Some(message) => self.absorb(message),
                    None => return self.take(),
                },
                () = tokio::time::sleep_until(deadline) => return self.take(),
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let first = self.first?;
        let last = self.last.unwrap_or(first);
        Some((last + self.batch).min(first + MAX_BATCH_WAIT.max(self.batch)))
    }

    fn absorb(&mut self, message: Message) {
        let mut relevant = match message {
            Message::Paths(paths) => {
                if paths.contains(&self.modes) {
                    self.rewatch_modes();
                }
                self.pending.extend(paths);
                true
            }
            Message::Rescan => {
                tracing::warn!("file watcher lost events; treating all configuration as changed");
                self.rescan();
                true
            }
            Message::Error(error) => {
                tracing::warn!(%error, "file watcher error");
                false
            }
        };
        if self.overflowed.swap(false, Ordering::AcqRel) {
            tracing::warn!("file watcher fell behind; treating all configuration as changed");
            self.rescan();
            relevant = true;
        }
        // An error alone neither starts nor extends a batch.
        if relevant {
            let now = Instant::now();
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }

    fn rescan(&mut self) {
        self.pending.insert(self.schedules.clone());
        self.rewatch_modes();
    }

    /// `modes/` appeared, vanished or was replaced: watch whatever is there now, and report
    /// what it holds, since files may have landed before the new watch took hold.
    fn rewatch_modes(&mut self) {
        // The old watch may already be gone (notify drops it on delete or rename).
        let _ = self.inner.unwatch(&self.modes);
        self.pending.insert(self.modes.clone());
        if !self.modes.is_dir() {
            tracing::debug!(path = %self.modes.display(), "modes directory is gone");
            return;
        }
        match self.inner.watch(&self.modes, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::debug!(path = %self.modes.display(), "watching modes directory"),
            Err(error) => {
                tracing::warn!(path = %self.modes.display(), %error, "cannot watch modes directory");
            }
        }
        match std::fs::read_dir(&self.modes) {
            Ok(entries) => {
                let files = entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| is_mode_file(&self.modes, path));
                self.pending.extend(files);
            }
            Err(error) => {
                tracing::warn!(path = %self.modes.display(), %error, "cannot list modes directory");
            }
        }
    }

    fn take(&mut self) -> Vec<PathBuf> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

/// Decides on notify's thread which events matter, so irrelevant ones never queue.
struct Filter {
    schedules: PathBuf,
    modes: PathBuf,
}

impl Filter {
    fn relevant(&self, event: &notify::Event) -> Vec<PathBuf> {
        let counts = match event.kind {
            // Reads, including our own reload's, must not trigger reloads.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
            EventKind::Any | EventKind::Other => false,
        };
        if !counts {
            return Vec::new();
        }
        event
            .paths
            .iter()
            .filter(|path| {
                **path == self.schedules || **path == self.modes || is_mode_file(&self.modes, path)
            })
            .cloned()
            .collect()
    }
}

/// `modes/<name>.md`, excluding editor droppings that happen to end in `.md`
/// (emacs `.#name.md` locks, hidden files).
fn is_mode_file(modes: &Path, path: &Path) -> bool {
    if path.parent() != Some(modes) {
        return false;
    }
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.len() > ".md".len()
        && name.ends_with(".md")
        && !name.starts_with('.')
        && !name.starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;

    const BATCH: Duration = Duration::from_millis(100);
    /// How long a batch may take to show up on a loaded machine.
    const ARRIVES: Duration = Duration::from_secs(2);
    /// How long to listen for a batch that must not come.
    const QUIET: Duration = Duration::from_millis(400);

    struct Fixture {
        dir: tempfile::TempDir,
        watcher: Watcher,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("schedules.json"), "{}\n").unwrap();
            fs::create_dir(dir.path().join("modes")).unwrap();
            fs::write(dir.path().join("modes/build.md"), "+++\n+++\n").unwrap();
            Fixture::start(dir)
        }

        fn start(dir: tempfile::TempDir) -> Fixture {
            let watcher = Watcher::new(&Instance::new(dir.path()), BATCH).unwrap();
            Fixture { dir, watcher }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        async fn batch(&mut self, within: Duration) -> Option<Vec<PathBuf>> {
            tokio::time::timeout(within, self.watcher.changed())
                .await
                .ok()
        }

        /// Waits for batches until one holds `rel`; fails after [`ARRIVES`].
        async fn expect(&mut self, rel: &str) -> Vec<PathBuf> {
            let want = self.path(rel);
            let until = Instant::now() + ARRIVES;
            let mut seen = Vec::new();
            while let Some(batch) = self.batch(until - Instant::now()).await {
                if batch.contains(&want) {
                    return batch;
                }
                seen.push(batch);
            }
            panic!("no batch with {rel} within {ARRIVES:?}; saw {seen:?}");
        }

        async fn expect_quiet(&mut self) {
            if let Some(batch) = self.batch(QUIET).await {
                panic!("expected no batch, got {batch:?}");
            }
            // A batch still collecting is a batch too, merely not finished.
            assert!(
                self.watcher.pending.is_empty(),
                "expected no batch, one is collecting {:?}",
                self.watcher.pending
            );
        }
    }

    #[tokio::test]
    async fn a_plain_write_to_schedules_json_is_one_batch() {
        let mut fx = Fixture::new();
        fs::write(fx.path("schedules.json"), "{\"version\": 1}\n").unwrap();
        assert_eq!(
            fx.expect("schedules.json").await,
            [fx.path("schedules.json")]
        );
        fx.expect_quiet().await;
    }

    #[tokio::test]
    async fn vim_save_with_4913_probe_backup_rename_and_swap_files() {
        let mut fx = Fixture::new();
        // What vim does with backupcopy=auto: a swap file while editing, a probe file to
        // test the directory, the original renamed to a backup, a new file, the backup removed.
        fs::write(fx.path(".schedules.json.swp"), "swap").unwrap();
        fs::write(fx.path(".schedules.json.swx"), "swap").unwrap();
        fs::write(fx.path("4913"), "").unwrap();
        fs::remove_file(fx.path("4913")).unwrap();
        fs::rename(fx.path("schedules.json"), fx.path("schedules.json~")).unwrap();
        fs::write(fx.path("schedules.json"), "{\"version\": 1}\n").unwrap();
        fs::remove_file(fx.path("schedules.json~")).unwrap();
        fs::remove_file(fx.path(".schedules.json.swp")).unwrap();
        fs::remove_file(fx.path(".schedules.json.swx")).unwrap();

        let batch = fx.expect("schedules.json").await;
        assert_eq!(batch, [fx.path("schedules.json")]);
    }

    #[tokio::test]
    async fn emacs_save_with_lock_autosave_and_backup() {
        let mut fx = Fixture::new();
        std::os::unix::fs::symlink("user@host.1234", fx.path(".#schedules.json")).unwrap();
        fs::write(fx.path("#schedules.json#"), "autosave").unwrap();
        fs::rename(fx.path("schedules.json"), fx.path("schedules.json~")).unwrap();
        fs::write(fx.path("schedules.json"), "{\"version\": 1}\n").unwrap();
        fs::remove_file(fx.path("#schedules.json#")).unwrap();
        fs::remove_file(fx.path(".#schedules.json")).unwrap();

        let batch = fx.expect("schedules.json").await;
        assert_eq!(batch, [fx.path("schedules.json")]);
    }

    #[tokio::test]
    async fn sed_in_place_rename_over_schedules_json() {
        let mut fx = Fixture::new();
        fs::write(fx.path("sedX1b2c3"), "{\"version\": 2}\n").unwrap();
        fs::rename(fx.path("sedX1b2c3"), fx.path("schedules.json")).unwrap();
        let batch = fx.expect("schedules.json").await;
        assert_eq!(batch, [fx.path("schedules.json")]);
    }

    #[tokio::test]
    async fn jq_to_tmp_then_mv_over_schedules_json() {
        let mut fx = Fixture::new();
        fs::write(fx.path("tmp"), "{\"version\": 3}\n").unwrap();
        fs::rename(fx.path("tmp"), fx.path("schedules.json")).unwrap();
        fx.expect("schedules.json").await;
    }

    #[tokio::test]
    async fn sed_in_place_on_a_mode_file() {
        let mut fx = Fixture::new();
        fs::write(fx.path("modes/sedQwErTy"), "+++\nname = \"b\"\n+++\n").unwrap();
        fs::rename(fx.path("modes/sedQwErTy"), fx.path("modes/build.md")).unwrap();
        let batch = fx.expect("modes/build.md").await;
        assert_eq!(batch, [fx.path("modes/build.md")]);
    }

    #[tokio::test]
    async fn vim_save_on_a_mode_file() {
        let mut fx = Fixture::new();
        fs::write(fx.path("modes/.build.md.swp"), "swap").unwrap();
        fs::write(fx.path("modes/4913"), "").unwrap();
        fs::remove_file(fx.path("modes/4913")).unwrap();
        fs::rename(fx.path("modes/build.md"), fx.path("modes/build.md~")).unwrap();
        fs::write(fx.path("modes/build.md"), "+++\n+++\n# Build\n").unwrap();
        fs::remove_file(fx.path("modes/build.md~")).unwrap();
        fs::remove_file(fx.path("modes/.build.md.swp")).unwrap();
        let batch = fx.expect("modes/build.md").await;
        assert_eq!(batch, [fx.path("modes/build.md")]);
    }

    #[tokio::test]
    async fn truncate_then_two_chunks_is_seen_and_the_batch_follows_the_last_write() {
        let mut fx = Fixture::new();
        let mut file = fs::File::create(fx.path("schedules.json")).unwrap();
        file.write_all(b"{\"version\":").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        file.write_all(b" 1}\n").unwrap();
        drop(file);
        fx.expect("schedules.json").await;
        fx.expect_quiet().await;
    }

    #[tokio::test]
    async fn ignored_names_produce_no_batch() {
        let mut fx = Fixture::new();
        for name in [
            "4913",
            ".schedules.json.swp",
            ".schedules.json.swx",
            "schedules.json~",
            "#schedules.json#",
            ".#schedules.json",
            "sedAb12Cd",
            "schedules.json.tmp",
            "tmp",
            "task_timing.tsv",
            "persistent-memory.md",
            "modes/4913",
            "modes/.build.md.swp",
            "modes/build.md~",
            "modes/#build.md#",
            "modes/.#build.md",
            "modes/.md",
            "modes/notes.txt",
            "modes/sedXyZ123",
        ] {
            fs::write(fx.path(name), "x").unwrap();
            fs::rename(fx.path(name), fx.path(&format!("{name}.2"))).unwrap();
            fs::remove_file(fx.path(&format!("{name}.2"))).unwrap();
        }
        // Reading relevant files (as a reload does) is not a change either.
        fs::read(fx.path("schedules.json")).unwrap();
        fs::read(fx.path("modes/build.md")).unwrap();
        fs::read_dir(fx.path("modes")).unwrap().for_each(drop);
        fx.expect_quiet().await;
    }

    #[tokio::test]
    async fn two_writes_50ms_apart_are_one_batch() {
        let mut fx = Fixture::new();
        // Written while `changed` is already waiting, so the window is what joins them.
        let (schedules, mode) = (fx.path("schedules.json"), fx.path("modes/build.md"));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            fs::write(schedules, "{\"a\": 1}\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            fs::write(mode, "+++\n+++\nnew\n").unwrap();
        });
        let batch = fx.expect("schedules.json").await;
        assert_eq!(
            batch,
            [fx.path("modes/build.md"), fx.path("schedules.json")],
            "both writes belong to one batch"
        );
        writer.join().unwrap();
        fx.expect_quiet().await;
    }

    #[tokio::test]
    async fn a_constant_writer_cannot_starve_reloads() {
        let mut fx = Fixture::new();
        let path = fx.path("schedules.json");
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    fs::write(&path, "{}\n").unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        // Writes every 20 ms never leave a 100 ms gap; only the cap ends the batch.
        let batch = fx.batch(MAX_BATCH_WAIT + ARRIVES).await;
        stop.store(true, Ordering::Release);
        writer.join().unwrap();
        assert_eq!(batch, Some(vec![fx.path("schedules.json")]));
    }

    #[tokio::test]
    async fn writes_under_state_dir_produce_no_batch() {
        let mut fx = Fixture::new();
        let runs = fx.path(".loop-orchestrator/runs");
        fs::create_dir_all(&runs).unwrap();
        for i in 0..5 {
            let mut log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(runs.join("x.log"))
                .unwrap();
            writeln!(log, "line {i}").unwrap();
        }
        fs::write(fx.path(".loop-orchestrator/schedules.json"), "{}").unwrap();
        fx.expect_quiet().await;
    }

    #[tokio::test]
    async fn modes_dir_created_after_start_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("schedules.json"), "{}\n").unwrap();
        let mut fx = Fixture::start(dir);

        fs::create_dir(fx.path("modes")).unwrap();
        fx.expect("modes").await;
        fs::write(fx.path("modes/a.md"), "+++\n+++\n").unwrap();
        assert_eq!(fx.expect("modes/a.md").await, [fx.path("modes/a.md")]);
    }

    #[tokio::test]
    async fn file_written_right_after_modes_dir_creation_is_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut fx = Fixture::start(dir);
        fs::create_dir(fx.path("modes")).unwrap();
        fs::write(fx.path("modes/a.md"), "+++\n+++\n").unwrap();
        fx.expect("modes/a.md").await;
    }

    #[tokio::test]
    async fn modes_dir_replaced_by_rename_is_watched_anew() {
        let mut fx = Fixture::new();
        fs::create_dir(fx.path("modes.new")).unwrap();
        fs::write(fx.path("modes.new/b.md"), "+++\n+++\n").unwrap();
        fs::rename(fx.path("modes"), fx.path("modes.old")).unwrap();
        fs::rename(fx.path("modes.new"), fx.path("modes")).unwrap();
        let batch = fx.expect("modes/b.md").await;
        assert!(batch.contains(&fx.path("modes")), "{batch:?}");
        fx.expect_quiet().await;

        // The old directory's watch is gone, the new one is live.
        fs::write(fx.path("modes.old/build.md"), "old").unwrap();
        fx.expect_quiet().await;
        fs::write(fx.path("modes/b.md"), "+++\n+++\nedited\n").unwrap();
        assert_eq!(fx.expect("modes/b.md").await, [fx.path("modes/b.md")]);
    }

    #[tokio::test]
    async fn changed_is_cancel_safe_inside_select() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("schedules.json"), "{}\n").unwrap();
        // A long window, so the batch cannot complete while we keep cancelling it.
        let mut watcher = Watcher::new(&Instance::new(dir.path()), Duration::from_secs(1)).unwrap();
        fs::write(dir.path().join("schedules.json"), "{\"a\": 1}\n").unwrap();

        // Cancel the wait until the event has been taken off the channel mid-batch.
        let until = Instant::now() + ARRIVES;
        while watcher.pending.is_empty() && Instant::now() < until {
            tokio::select! {
                batch = watcher.changed() => panic!("batch before its window closed: {batch:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        assert!(!watcher.pending.is_empty(), "the event never arrived");

        let batch = tokio::time::timeout(MAX_BATCH_WAIT + ARRIVES, watcher.changed())
            .await
            .expect("the event absorbed by a cancelled call was lost");
        assert_eq!(batch, [dir.path().join("schedules.json")]);
    }

    #[test]
    fn missing_directory_is_a_watch_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = Watcher::new(&Instance::new(&missing), BATCH).unwrap_err();
        assert!(matches!(&err, WatchError::Watch { path, .. } if *path == missing));
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn mode_file_names() {
        let modes = Path::new("d/modes");
        for ok in ["build.md", "a-b.md", "x.y.md"] {
            assert!(is_mode_file(modes, &modes.join(ok)), "{ok}");
        }
        for bad in [
            ".md",
            ".#build.md",
            "#build.md#",
            ".build.md.swp",
            "build.md~",
            "build.txt",
            "4913",
        ] {
            assert!(!is_mode_file(modes, &modes.join(bad)), "{bad}");
        }
        assert!(!is_mode_file(modes, Path::new("d/other/build.md")));
        assert!(!is_mode_file(modes, Path::new("d/modes/sub/build.md")));
    }
}
