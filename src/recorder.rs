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

use std::path::Path;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::memory::{MemoryLimits, MemoryStore, Section};
use crate::timing::{Row, TimingFile};

/// Most requests committed together; more wait for the next batch.
const MAX_BATCH: usize = 4_096;

enum Job {
    Rows(Vec<Row>, oneshot::Sender<Result<(), String>>),
    /// Answered once every job sent before it is committed.
    Flush(oneshot::Sender<Result<(), String>>),
    Memory(
        Vec<(Section, String)>,
        MemoryLimits,
        oneshot::Sender<Result<(), String>>,
    ),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

/// A handle to the writer thread; clone it freely. The thread ends when the last handle drops.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Job>,
}

impl Recorder {
    pub fn start(timing: TimingFile, memory: MemoryStore) -> Recorder {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer(rx, timing, memory))
            .expect("the recorder thread starts");
        Recorder { tx }
    }

    /// The recorder of an instance directory.
    pub fn for_instance(dir: &Path) -> Recorder {
        Recorder::start(
            TimingFile::new(dir.join(crate::cycle::TIMING_FILE)),
            crate::cycle::memory_store(dir),
        )
    }

    /// Appends rows; returns once they are on disk.
    pub async fn rows(&self, rows: Vec<Row>) -> Result<(), RecordError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Rows(rows, ack))
            .map_err(|_| RecordError("the recorder stopped".into()))?;
        done.await
            .map_err(|_| RecordError("the recorder stopped".into()))?
            .map_err(RecordError)
    }

    /// Queues rows without waiting for them: for rows no later step depends on (a skipped
    /// fire). Errors are logged by the writer; [`Recorder::flush`] waits for them.
    pub fn rows_detached(&self, rows: Vec<Row>) {
        let (ack, _) = oneshot::channel();
        if self.tx.send(Job::Rows(rows, ack)).is_err() {
            tracing::error!("rows not written: the recorder stopped");
        }
    }

    /// Returns once everything sent before is on disk.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Job::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }

    /// Queues memory entries without waiting; they are committed before any row sent after
    /// them (see the module doc). Errors are logged by the writer.
    pub fn memory_detached(&self, entries: Vec<(Section, String)>, limits: MemoryLimits) {
        let (ack, _) = oneshot::channel();
        if self.tx.send(Job::Memory(entries, limits, ack)).is_err() {
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
        self.tx
            .send(Job::Memory(entries, limits, ack))
            .map_err(|_| RecordError("the recorder stopped".into()))?;
        done.await
            .map_err(|_| RecordError("the recorder stopped".into()))?
            .map_err(RecordError)
    }
}

/// Memory entries kept for another try after a failed write (a full disk), at most this many.
const MAX_PENDING: usize = 10_000;

fn writer(rx: mpsc::Receiver<Job>, timing: TimingFile, memory: MemoryStore) {
    // Entries whose write failed, retried with the next batch: a disk that fills up for a
    // while delays them instead of losing them.
    let mut pending: Vec<(Section, String)> = Vec::new();
    let mut pending_limits = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut rows = Vec::new();
        let mut row_acks = Vec::new();
        let mut entries = Vec::new();
        let mut memory_acks = Vec::new();
        let mut limits = None;
        let mut flushes = Vec::new();
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
            }
        }
        if let Some(limits) = limits.or(pending_limits) {
            let mut all = std::mem::take(&mut pending);
            let retried = all.len();
            all.extend(entries);
            let result = memory
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
                    pending = all;
                    pending_limits = Some(limits);
                }
            }
            for ack in memory_acks {
                let _ = ack.send(result.clone());
            }
        }
        if !row_acks.is_empty() {
            let result = timing.append_all(&rows).map_err(|err| err.to_string());
            if let Err(err) = &result {
                tracing::error!(error = %err, rows = rows.len(), "rows not written");
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
