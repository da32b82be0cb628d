//! The one writer of a process's rows and memory entries, with group commit.
//!
//! Rows and memory entries are durable before a cycle goes on (a mode's row is on disk before
//! the next mode starts), but many cycles run at once in the service, and a write + fdatasync
//! per row, or a rewrite of the memory file per mode run, would cost a thread and a disk flush
//! each. So every request goes to one thread, which takes all requests waiting at that moment
//! and commits them together: the rows in one `append_all` (one write, one fdatasync), the
//! memory entries in one `add_and_prune`. Each request is answered when its batch is durable.
//! Within a batch, memory entries are committed before rows, and batches in order: so a row
//! on disk implies that every memory entry sent before it is on disk too.
//! A batch's I/O error is every one of its requests' error.
//!
//! `run-cycle` runs one cycle at a time and has nothing to group: its recorder is *inline*,
//! committing on the caller's thread with the same order (queued memory entries before the
//! rows that follow them).
//!
//! The recorder is the only writer of rows: cycles, the service's skipped and escalated
//! rows, the reaper's `interrupted` rows and `init`'s header all go through it. After the
//! rows of a batch are durable in task_timing.tsv, the same rows are handed to every
//! [`RowSink`] (metrics, a cluster table), so those cannot disagree with the file: a row
//! that did not reach the file reaches no sink.

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use crate::instance::Instance;
use crate::memory::{MemoryLimits, MemoryStore, Section};
use crate::timing::{Row, TimingError, TimingFile};

/// Receives the rows the recorder has made durable in task_timing.tsv, in the order written.
/// Called on the writer's thread after each batch: it must not block for long (hand the rows
/// on to a channel of its own when it does I/O).
pub trait RowSink: Send + 'static {
    fn rows_written(&mut self, rows: &[Row]);
}

/// Most requests committed together; more wait for the next batch.
const MAX_BATCH: usize = 4_096;

enum Job {
    Rows(Vec<Row>, oneshot::Sender<Result<(), String>>),
    /// Answered once every job sent before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
    /// Writes the header of an empty file.
    Header(oneshot::Sender<Result<(), String>>),
    Memory(
        Vec<(Section, String)>,
        MemoryLimits,
        oneshot::Sender<Result<(), String>>,
    ),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

/// A handle to the writer; clone it freely. A writer thread ends when the last handle drops;
/// an inline writer commits what is still queued then.
#[derive(Clone)]
pub struct Recorder {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Thread(mpsc::Sender<Job>),
    Inline(Arc<Mutex<Inline>>),
}

/// The writer of a process that runs one cycle at a time (`run-cycle`): it commits on the
/// caller's thread when the caller waits, so a row costs no hand-off to another thread and
/// back; detached jobs wait in `queued` for the next commit, in order.
struct Inline {
    writer: Writer,
    queued: Vec<Job>,
}

impl Drop for Inline {
    fn drop(&mut self) {
        let jobs = std::mem::take(&mut self.queued);
        self.writer.commit(jobs);
    }
}

impl Recorder {
    pub fn start(
        timing: TimingFile,
        memory: MemoryStore,
        sinks: Vec<Box<dyn RowSink>>,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer::new(timing, memory, sinks);
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(rx))
            .expect("the recorder thread starts");
        Recorder {
            inner: Inner::Thread(tx),
        }
    }

    /// A recorder without a thread, for a process with one cycle at a time (see [`Inline`]).
    pub fn inline(timing: TimingFile, memory: MemoryStore) -> Recorder {
        Recorder {
            inner: Inner::Inline(Arc::new(Mutex::new(Inline {
                writer: Writer::new(timing, memory, Vec::new()),
                queued: Vec::new(),
            }))),
        }
    }

    /// The recorder of an instance directory, on a thread of its own, with its sinks.
    pub fn for_instance(inst: &Instance, sinks: Vec<Box<dyn RowSink>>) -> Recorder {
        Recorder::start(TimingFile::new(inst.timing()), MemoryStore::of(inst), sinks)
    }

    /// The inline recorder of an instance directory.
    pub fn inline_for_instance(inst: &Instance) -> Recorder {
        Recorder::inline(TimingFile::new(inst.timing()), MemoryStore::of(inst))
    }

    /// Appends rows without an async context (the reaper); returns once they are on disk. On
    /// a recorder with a writer thread, must not be called from inside an async task.
    pub fn rows_blocking(&self, rows: Vec<Row>) -> Result<(), RecordError> {
        let (ack, done) = oneshot::channel();
        self.commit_blocking(Job::Rows(rows, ack), done)
    }

    /// Writes task_timing.tsv's header when the file is empty or missing (`init`).
    pub fn ensure_header(&self) -> Result<(), RecordError> {
        let (ack, done) = oneshot::channel();
        self.commit_blocking(Job::Header(ack), done)
    }

    /// Sends `job` and waits for its answer on this thread. An inline writer has answered by
    /// the time `send` returns (so this also works inside an async task); a writer thread is
    /// waited for, which only code outside a runtime may do.
    fn commit_blocking(
        &self,
        job: Job,
        mut done: oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), RecordError> {
        let stopped = || RecordError("the recorder stopped".into());
        if !self.send(job, true) {
            return Err(stopped());
        }
        let answer = match &self.inner {
            Inner::Inline(_) => done.try_recv().map_err(|_| stopped())?,
            Inner::Thread(_) => done.blocking_recv().map_err(|_| stopped())?,
        };
        answer.map_err(RecordError)
    }

    /// Hands `job` to the writer; `wait` says the caller will wait for its answer, so an
    /// inline writer commits now. `false` when the writer is gone.
    fn send(&self, job: Job, wait: bool) -> bool {
        match &self.inner {
            Inner::Thread(tx) => tx.send(job).is_ok(),
            Inner::Inline(inline) => {
                let mut inline = inline.lock().unwrap_or_else(|p| p.into_inner());
                inline.queued.push(job);
                if wait {
                    let jobs = std::mem::take(&mut inline.queued);
                    inline.writer.commit(jobs);
                }
                true
            }
        }
    }

    /// Appends rows; returns once they are on disk.
    pub async fn rows(&self, rows: Vec<Row>) -> Result<(), RecordError> {
        let (ack, done) = oneshot::channel();
        if !self.send(Job::Rows(rows, ack), true) {
            return Err(RecordError("the recorder stopped".into()));
        }
        done.await
            .map_err(|_| RecordError("the recorder stopped".into()))?
            .map_err(RecordError)
    }

    /// Queues rows without waiting for them: for rows no later step depends on (a skipped
    /// fire). Errors are logged by the writer; [`Recorder::flush`] waits for them.
    pub fn rows_detached(&self, rows: Vec<Row>) {
        let (ack, _) = oneshot::channel();
        if !self.send(Job::Rows(rows, ack), false) {
            tracing::error!("rows not written: the recorder stopped");
        }
    }

    /// Returns once everything sent before is on disk.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.send(Job::Flush(ack), true) {
            let _ = done.await;
        }
    }

    /// Queues memory entries without waiting; they are committed before any row sent after
    /// them (see the module doc). Errors are logged by the writer.
    pub fn memory_detached(&self, entries: Vec<(Section, String)>, limits: MemoryLimits) {
        let (ack, _) = oneshot::channel();
        if !self.send(Job::Memory(entries, limits, ack), false) {
            tracing::error!("memory entries not written: the recorder stopped");
        }
    }

    /// Adds memory entries, pruning when the file passes its limit; returns once written.
    pub async fn memory(
        &self,
        entries: Vec<(Section, String)>,
        limits: MemoryLimits,
    ) -> Result<(), RecordError> {
        let (ack, done) = oneshot::channel();
        if !self.send(Job::Memory(entries, limits, ack), true) {
            return Err(RecordError("the recorder stopped".into()));
        }
        done.await
            .map_err(|_| RecordError("the recorder stopped".into()))?
            .map_err(RecordError)
    }
}

/// Memory entries kept for another try after a failed write (a full disk), at most this many.
const MAX_PENDING: usize = 10_000;

/// The files and the entries still owed to the memory file.
struct Writer {
    timing: TimingFile,
    memory: MemoryStore,
    /// Entries whose write failed, retried with the next batch: a disk that fills up for a
    /// while delays them instead of losing them.
    pending: Vec<(Section, String)>,
    pending_limits: Option<MemoryLimits>,
    sinks: Vec<Box<dyn RowSink>>,
}

impl Writer {
    fn new(timing: TimingFile, memory: MemoryStore, sinks: Vec<Box<dyn RowSink>>) -> Writer {
        Writer {
            timing,
            memory,
            pending: Vec::new(),
            pending_limits: None,
            sinks,
        }
    }

    /// The writer thread: takes every job waiting and commits them together.
    fn run(&mut self, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
    }

    /// Commits one batch: its memory entries, then its rows, then answers its flushes.
    fn commit(&mut self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut rows = Vec::new();
        let mut row_acks = Vec::new();
        let mut entries = Vec::new();
        let mut memory_acks = Vec::new();
        let mut limits = None;
        let mut flushes = Vec::new();
        let mut headers = Vec::new();
        for job in jobs {
            match job {
                Job::Rows(batch, ack) => {
                    rows.extend(batch);
                    row_acks.push(ack);
                }
                Job::Memory(batch, l, ack) => {
                    entries.extend(batch);
                    limits = Some(l);
                    memory_acks.push(ack);
                }
                Job::Flush(ack) => flushes.push(ack),
                Job::Header(ack) => headers.push(ack),
            }
        }
        if let Some(limits) = limits.or(self.pending_limits) {
            let mut all = std::mem::take(&mut self.pending);
            let retried = all.len();
            all.extend(entries);
            let result = self
                .memory
                .add_and_prune(&all, limits)
                .map(|_| ())
                .map_err(|err| err.to_string());
            match &result {
                Ok(()) if retried > 0 => {
                    tracing::info!(retried, "memory entries written after an earlier failure")
                }
                Ok(()) => {}
                Err(err) => {
                    let dropped = all.len().saturating_sub(MAX_PENDING);
                    all.drain(..dropped);
                    tracing::error!(error = %err, kept = all.len(), dropped, "memory entries not written; kept for the next write");
                    self.pending = all;
                    self.pending_limits = Some(limits);
                }
            }
            for ack in memory_acks {
                let _ = ack.send(result.clone());
            }
        }
        if !headers.is_empty() {
            let result = self
                .timing
                .ensure_header()
                .map_err(|err: TimingError| err.to_string());
            for ack in headers {
                let _ = ack.send(result.clone());
            }
        }
        if !row_acks.is_empty() {
            let result = self.timing.append_all(&rows).map_err(|err| err.to_string());
            match &result {
                Ok(()) => {
                    for sink in &mut self.sinks {
                        sink.rows_written(&rows);
                    }
                }
                Err(err) => tracing::error!(error = %err, rows = rows.len(), "rows not written"),
            }
            for ack in row_acks {
                let _ = ack.send(result.clone());
            }
        }
        for ack in flushes {
            let _ = ack.send(Ok(()));
        }
    }
}
