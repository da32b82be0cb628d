//! The service (`serve`): fires every enabled schedule on its cron instants, reloads on edits
//! and SIGHUP, escalates failing schedules, and stops cleanly (SPEC §7).
//!
//! - [`core`]: every decision (due, overlap, queue, escalate, reload, clock steps, stop) as a
//!   function of `now` and an event, returning actions; no I/O.
//! - [`run`]: the loop on a thread of its own that waits for events (timer, signals, watcher,
//!   cycle ends, watchdog) and performs the core's actions; shutdown.
//! - [`fire`]: one started fire, on the worker runtime (jitter, slot, lock, cycle) and the
//!   `on_escalate` hook.
//! - [`timer`], [`watch`], [`notify`]: the deadline timer, the directory watcher, sd_notify.
//! - With a metrics address ([`Options::metrics`] or `"metrics"` in schedules.json), the
//!   [`crate::metrics`] HTTP server on a thread of its own: its address is bound before
//!   anything starts (a refused address is exit 2, before READY), its counters are a row
//!   sink of the recorder, its gauges and health are fed by the loop.
//!
//! Rules kept here: one service per directory (the service lock is held for the whole run);
//! nothing starts before the configuration validates; leftover process groups of a
//! supervisor that died are reaped before the first fire.

pub mod core;
mod fire;
pub mod notify;
mod run;
pub mod timer;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::lock::{LockError, LockFile};
use crate::recorder::{Recorder, RowSink};

/// A runtime on the calling thread alone: the scheduling loop's (and `run-cycle`'s).
pub fn single_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The runtime cycles run on.
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// How `serve` runs, beyond the instance's files.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve metrics, health and the dashboard here (wins over `"metrics"` in the file).
    pub metrics: Option<SocketAddr>,
    /// Allow a metrics address other hosts can reach.
    pub metrics_allow_remote: bool,
}

/// `serve`: runs until SIGTERM or SIGINT; `Ok(0)` after a clean stop.
pub fn serve(inst: &Instance, options: &Options) -> Result<Code, Error> {
    serve_with(inst, options, Vec::new())
}

/// `serve` with extra row sinks (a cluster table) fed by the recorder.
pub fn serve_with(
    inst: &Instance,
    options: &Options,
    mut sinks: Vec<Box<dyn RowSink>>,
) -> Result<Code, Error> {
    crate::heap::tune();
    let inst = std::path::absolute(inst.root())
        .map(Instance::new)
        .map_err(|err| Error::Invalid(format!("serve: {}: {err}", inst.root().display())))?;
    let mut service_lock =
        LockFile::service(&inst).map_err(|err| Error::Failed(format!("serve: {err}")))?;
    let _service = match service_lock.try_exclusive() {
        Ok(guard) => guard,
        Err(LockError::Held { pid, .. }) => {
            return Err(Error::Invalid(format!(
                "serve: a service already runs on {} (pid {pid})",
                inst.root().display()
            )));
        }
        Err(err) => return Err(Error::Failed(format!("serve: {err}"))),
    };
    // Nothing starts before the configuration validates; main prints every problem.
    let config = Config::load(inst.root())?;
    let listener = options
        .metrics
        .or(config.metrics)
        .map(|addr| crate::metrics::http::bind(addr, options.metrics_allow_remote))
        .transpose()
        .map_err(|err| Error::Invalid(format!("serve: {err}")))?;
    let metrics = listener
        .as_ref()
        .map(|_| crate::metrics::Metrics::new(&inst));
    if let Some(metrics) = &metrics {
        sinks.push(metrics.row_sink());
    }
    let recorder = Recorder::for_instance(&inst, sinks);
    let _registration = crate::leftover::register(&inst);
    for reaped in crate::leftover::reap(&inst, &recorder) {
        eprintln!("serve: {reaped}");
    }
    // The loop runs on this thread, on a runtime of its own that drives only its timer,
    // signals, watcher and channels; cycles run on the worker runtime. Sharing one runtime,
    // the timer's readiness waited behind the workers' queue of cycle tasks (busy workers
    // look at the I/O driver only every few dozen polls): 160 ms p99 lateness at 1,000
    // schedules a second, against ~1 ms on a thread the cycles cannot delay.
    let workers = worker_runtime()
        .map_err(|err| Error::Failed(format!("serve: cannot start the workers: {err}")))?;
    let loop_rt = single_thread_runtime().map_err(|err| {
        Error::Failed(format!(
            "serve: cannot start the scheduler's runtime: {err}"
        ))
    })?;
    if let (Some(listener), Some(metrics)) = (listener, &metrics) {
        tracing::info!(address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "metrics: serving /metrics, /healthz, /readyz and /");
        let router = crate::metrics::http::router(Arc::clone(metrics));
        crate::metrics::http::spawn(listener, router).map_err(|err| {
            Error::Failed(format!("serve: cannot start the metrics server: {err}"))
        })?;
    }
    let handle = workers.handle().clone();
    let result = loop_rt.block_on(async move {
        let service = run::Service::new(inst, config, recorder, handle, metrics)
            .map_err(|err| Error::Failed(format!("serve: {err}")))?;
        service.run().await
    });
    // Dropping the runtime drops what still runs; the runner's guards kill their groups.
    workers.shutdown_timeout(Duration::from_secs(1));
    result
}
