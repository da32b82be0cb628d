//! The Prometheus metrics of `serve --metrics ADDR` (SPEC §10), its health and its HTTP
//! face.
//!
//! Two sources, never mixed:
//! - **What was done** comes only from the rows: [`Metrics::row_sink`] is a
//!   [`RowSink`] of the recorder, which hands it each row once the row is durable in
//!   task_timing.tsv. So `fires_total`, `cycles_total`, `mode_runs_total`, the duration and
//!   lateness histograms, `cost_usd_total` and `last_cycle_timestamp_seconds` agree with the
//!   rows this service wrote, and a row that did not reach the file reaches no counter.
//!   Rows written by other processes (a `run-cycle`) are not this service's and are not
//!   counted; counters start at zero with the process, as Prometheus expects of counters.
//! - **What is going on** is set by the service as it runs: the loop publishes its decision
//!   core's per-schedule state ([`gauges::Publisher`]: next fire, interval, failure streak,
//!   escalated, queued fires), the fire tasks their stage ([`FireStage`]: waiting for a
//!   slot, running), the loop its turns ([`health::Health`]) and its reloads.
//!
//! `memory_lines` is read from persistent-memory.md at scrape time, as `memory show` counts
//! it, so a prune by another process shows at once.
//!
//! Definitions the rows give:
//! - a *fire* is a cycle row with a `scheduled_at` (every dispatched instant gets exactly
//!   one, started, skipped or interrupted); it is counted when that row is written;
//! - *lateness* is `started_at - scheduled_at` of such a row (a catch-up fire is as late as
//!   the instant it made up for);
//! - *cost* is summed over mode rows only: a cycle row repeats the sum of its modes'.

pub mod gauges;
pub mod health;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::instance::Instance;
use crate::recorder::RowSink;
use crate::timing::{CYCLE_MODE, Row};

pub use health::Health;

/// Upper bounds of `mode_duration_seconds`: modes take from milliseconds (`true`) to their
/// timeout (an hour by default).
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];
/// Upper bounds of `fire_lateness_seconds`: a fire is normally a millisecond late; a second
/// is the alert; a minute is a missed instant (the core's `STALE_AFTER`).
const LATENESS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CycleLabels {
    schedule: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeRunLabels {
    schedule: String,
    mode: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// The families of one service, registered under `loop_orchestrator_`.
pub struct Metrics {
    registry: Registry,
    inst: Instance,
    health: Health,
    fires: Family<ScheduleLabel, Counter>,
    cycles: Family<CycleLabels, Counter>,
    mode_runs: Family<ModeRunLabels, Counter>,
    mode_duration: Family<ModeLabel, Histogram, fn() -> Histogram>,
    fire_lateness: Histogram,
    cost: Family<ScheduleLabel, Counter<f64, AtomicU64>>,
    last_cycle: Family<CycleLabels, FloatGauge>,
    running: Gauge,
    waiting: Gauge,
    next_fire: Family<ScheduleLabel, FloatGauge>,
    interval: Family<ScheduleLabel, FloatGauge>,
    failure_streak: Family<ScheduleLabel, Gauge>,
    escalated: Family<ScheduleLabel, Gauge>,
    reloads: Family<ResultLabel, Counter>,
    memory_lines: Gauge,
    /// Length of the last exposition, to size the next one's buffer.
    last_len: std::sync::atomic::AtomicUsize,
    /// `max_cost_usd_per_day` per schedule, for the page at `/`; set at load and reload.
    budgets: std::sync::Mutex<std::collections::BTreeMap<String, f64>>,
}

impl Metrics {
    pub fn new(inst: &Instance) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("loop_orchestrator");
        let metrics = Metrics {
            registry: Registry::default(),
            inst: inst.clone(),
            health: Health::default(),
            fires: Family::default(),
            cycles: Family::default(),
            mode_runs: Family::default(),
            mode_duration: Family::new_with_constructor(duration_histogram),
            fire_lateness: Histogram::new(LATENESS_BUCKETS),
            cost: Family::default(),
            last_cycle: Family::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            next_fire: Family::default(),
            interval: Family::default(),
            failure_streak: Family::default(),
            escalated: Family::default(),
            reloads: Family::default(),
            memory_lines: Gauge::default(),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            budgets: std::sync::Mutex::default(),
        };
        let m = &metrics;
        registry.register(
            "fires",
            "Fires of the schedule: cycle rows with a scheduled_at (started, skipped or interrupted)",
            m.fires.clone(),
        );
        registry.register(
            "cycles",
            "Cycle rows written, by schedule and status",
            m.cycles.clone(),
        );
        registry.register(
            "mode_runs",
            "Mode rows written, by schedule, mode and status",
            m.mode_runs.clone(),
        );
        registry.register_with_unit(
            "mode_duration",
            "Duration of mode runs (the duration_ms of mode rows)",
            Unit::Seconds,
            m.mode_duration.clone(),
        );
        registry.register_with_unit(
            "fire_lateness",
            "started_at - scheduled_at of the cycle rows of fires",
            Unit::Seconds,
            m.fire_lateness.clone(),
        );
        registry.register(
            "running_cycles",
            "Cycles running now (holding a slot of max_concurrent_cycles)",
            m.running.clone(),
        );
        registry.register(
            "waiting_fires",
            "Fires dispatched and not started yet (jitter, a free slot, a busy schedule) or queued behind a running cycle (overlap queue)",
            m.waiting.clone(),
        );
        registry.register_with_unit(
            "next_fire_timestamp",
            "Unix time of the schedule's next fire; absent while disabled or escalated",
            Unit::Seconds,
            m.next_fire.clone(),
        );
        registry.register_with_unit(
            "schedule_interval",
            "Longest gap between the schedule's next instants (for alerts on a missing success); absent while disabled or escalated",
            Unit::Seconds,
            m.interval.clone(),
        );
        registry.register_with_unit(
            "last_cycle_timestamp",
            "Unix time the schedule's last cycle row of this status finished (seeded from task_timing.tsv at start)",
            Unit::Seconds,
            m.last_cycle.clone(),
        );
        registry.register(
            "failure_streak",
            "Consecutive cycles that counted as failures",
            m.failure_streak.clone(),
        );
        registry.register(
            "escalated",
            "1 while the schedule is escalated (paused until its entry changes or `resume`)",
            m.escalated.clone(),
        );
        registry.register(
            "reloads",
            "Reloads of the configuration, by result (ok, rejected)",
            m.reloads.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost in US dollars reported by mode rows",
            m.cost.clone(),
        );
        registry.register(
            "memory_lines",
            "Lines of persistent-memory.md",
            m.memory_lines.clone(),
        );
        // Both results from the start, so that a rule on `rejected` sees 0 before the first.
        for result in ["ok", "rejected"] {
            m.reloads.get_or_create_owned(&ResultLabel { result });
        }
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build_info);
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// The sink the recorder feeds with each durable row.
    pub fn row_sink(self: &Arc<Self>) -> Box<dyn RowSink> {
        Box::new(Rows(self.clone()))
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn instance(&self) -> &Instance {
        &self.inst
    }

    /// Sets `last_cycle_timestamp_seconds` from the rows already in task_timing.tsv, for the
    /// schedules in `ids`: a restarted service knows when each last succeeded.
    pub fn seed<'a>(&self, rows: &[Row], ids: impl Iterator<Item = &'a str>) {
        let ids: std::collections::HashSet<&str> = ids.collect();
        for row in rows.iter().filter(|r| r.mode == CYCLE_MODE) {
            if ids.contains(row.schedule.as_str()) {
                self.last_cycle(row);
            }
        }
    }

    /// The schedules' daily budgets, from a configuration just loaded.
    pub fn set_budgets(&self, schedules: &[crate::schedule::Schedule]) {
        let budgets = schedules
            .iter()
            .filter_map(|s| Some((s.id.clone(), s.max_cost_usd_per_day?)))
            .collect();
        *self.budgets.lock().unwrap_or_else(|p| p.into_inner()) = budgets;
    }

    pub fn budgets(&self) -> std::collections::BTreeMap<String, f64> {
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A reload of the configuration was accepted (`ok`) or rejected.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// The exposition in `format`, with what is read at scrape time brought up to date.
    pub fn encode(&self, format: Format) -> String {
        if let Ok(text) = std::fs::read_to_string(self.inst.memory()) {
            // Counted as a parse counts them, without parsing the file at every scrape.
            self.memory_lines
                .set(crate::memory::count_lines(&text) as i64);
        }
        // Room for the last exposition and a little more: growing a string of hundreds of
        // kilobytes by doubling copied it a tenth of the time of an encoding.
        let last = self.last_len.load(std::sync::atomic::Ordering::Relaxed);
        let mut out = String::with_capacity(last + last / 8 + 4096);
        let encoded = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        // Writing to a String fails only if a metric's own encoder does, which none here do.
        if let Err(err) = encoded {
            tracing::error!(error = %err, "metrics: encoding failed");
        }
        self.last_len
            .store(out.len(), std::sync::atomic::Ordering::Relaxed);
        out
    }

    fn row(&self, row: &Row) {
        let schedule = &row.schedule;
        let status = row.status.as_str();
        if row.mode == CYCLE_MODE {
            self.cycles
                .get_or_create(&CycleLabels {
                    schedule: schedule.clone(),
                    status,
                })
                .inc();
            self.last_cycle(row);
            if let Some(scheduled) = row.scheduled_at {
                self.fires
                    .get_or_create(&ScheduleLabel {
                        schedule: schedule.clone(),
                    })
                    .inc();
                let late = (row.started_at - scheduled).num_milliseconds() as f64 / 1e3;
                self.fire_lateness.observe(late.max(0.0));
            }
            return;
        }
        self.mode_runs
            .get_or_create(&ModeRunLabels {
                schedule: schedule.clone(),
                mode: row.mode.clone(),
                status,
            })
            .inc();
        self.mode_duration
            .get_or_create(&ModeLabel {
                mode: row.mode.clone(),
            })
            .observe(row.duration_ms as f64 / 1e3);
        if let Some(cost) = row.cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
            self.cost
                .get_or_create(&ScheduleLabel {
                    schedule: schedule.clone(),
                })
                .inc_by(cost);
        }
    }

    /// Moves `last_cycle_timestamp_seconds` forward to the row's end, never back (rows of
    /// parallel cycles end in any order).
    fn last_cycle(&self, row: &Row) {
        let at = row.finished_at.timestamp_millis() as f64 / 1e3;
        let gauge = self.last_cycle.get_or_create(&CycleLabels {
            schedule: row.schedule.clone(),
            status: row.status.as_str(),
        });
        if gauge.get() < at {
            gauge.set(at);
        }
    }
}

/// The recorder's sink: every durable row, in the order written.
struct Rows(Arc<Metrics>);

impl RowSink for Rows {
    fn rows_written(&mut self, rows: &[Row]) {
        for row in rows {
            self.0.row(row);
        }
    }
}

/// The exposition formats, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, which Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for every other client.
    Text,
}

impl Format {
    /// OpenMetrics when the client names it in `Accept`, the 0.0.4 text otherwise (what
    /// Prometheus's own client libraries do; its scraper lists both).
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of the format (OpenMetrics 1.0 §"Overall structure"; the
    /// Prometheus exposition formats document for 0.0.4).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Where a dispatched fire is, for `waiting_fires` and `running_cycles`: waiting from its
/// dispatch until its cycle starts, then running until it ends. Dropping it takes the fire
/// off whichever it is on, so a fire that ends early or panics is not left counted.
pub struct FireStage {
    metrics: Option<Arc<Metrics>>,
    running: bool,
}

impl FireStage {
    /// A fire just dispatched: waiting. Without metrics, a stage that counts nothing.
    pub fn dispatched(metrics: Option<&Arc<Metrics>>) -> FireStage {
        if let Some(m) = metrics {
            m.waiting.inc();
        }
        FireStage {
            metrics: metrics.cloned(),
            running: false,
        }
    }

    /// Its cycle starts.
    pub fn started(&mut self) {
        if let (Some(m), false) = (&self.metrics, self.running) {
            m.waiting.dec();
            m.running.inc();
            self.running = true;
        }
    }
}

impl Drop for FireStage {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            if self.running {
                m.running.dec();
            } else {
                m.waiting.dec();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::{Priority, Status};

    fn row(mode: &str, status: Status, scheduled: bool, late_ms: i64) -> Row {
        let at: chrono::DateTime<chrono::Utc> = "2026-11-21T12:00:00Z".parse().unwrap();
        Row {
            scheduled_at: scheduled.then_some(at),
            started_at: at + chrono::TimeDelta::milliseconds(late_ms),
            finished_at: at + chrono::TimeDelta::seconds(3),
            duration_ms: 2_500,
            priority: Priority::Schedule,
            schedule: "s".into(),
            cycle: "c".into(),
            mode: mode.into(),
            attempt: 1,
            status,
            exit_code: Some(0),
            cost_usd: (mode != CYCLE_MODE).then_some(0.25),
            note: String::new(),
        }
    }

    fn sample<'a>(text: &'a str, line_start: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn rows_become_counters_histograms_and_the_last_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(&Instance::new(dir.path()));
        let mut sink = metrics.row_sink();
        sink.rows_written(&[
            row("validation", Status::Ok, true, 0),
            row("validation", Status::Failed, true, 0),
            row(CYCLE_MODE, Status::Failed, true, 1_500),
            row(CYCLE_MODE, Status::Escalated, false, 0),
        ]);
        let text = metrics.encode(Format::Text);
        let at: chrono::DateTime<chrono::Utc> = "2026-11-21T12:00:00Z".parse().unwrap();
        let get = |start: &str| sample(&text, start).unwrap_or_else(|| panic!("{start}\n{text}"));
        assert_eq!(get("loop_orchestrator_fires_total{schedule=\"s\"}"), "1");
        assert_eq!(
            get("loop_orchestrator_cycles_total{schedule=\"s\",status=\"failed\"}"),
            "1"
        );
        assert_eq!(
            get("loop_orchestrator_cycles_total{schedule=\"s\",status=\"escalated\"}"),
            "1"
        );
        assert_eq!(
            get(
                "loop_orchestrator_mode_runs_total{schedule=\"s\",mode=\"validation\",status=\"ok\"}"
            ),
            "1"
        );
        assert_eq!(
            get("loop_orchestrator_cost_usd_total{schedule=\"s\"}"),
            "0.5"
        );
        assert_eq!(
            get("loop_orchestrator_mode_duration_seconds_bucket{mode=\"validation\",le=\"1\"}"),
            "0"
        );
        assert_eq!(
            get("loop_orchestrator_mode_duration_seconds_bucket{mode=\"validation\",le=\"5\"}"),
            "2"
        );
        assert_eq!(
            get("loop_orchestrator_fire_lateness_seconds_bucket{le=\"1\"}"),
            "0"
        );
        assert_eq!(
            get("loop_orchestrator_fire_lateness_seconds_bucket{le=\"2.5\"}"),
            "1"
        );
        assert_eq!(get("loop_orchestrator_fire_lateness_seconds_count"), "1");
        assert_eq!(
            get("loop_orchestrator_last_cycle_timestamp_seconds{schedule=\"s\",status=\"failed\"}"),
            format!("{:.1}", at.timestamp() as f64 + 3.0)
        );
        assert_eq!(get("loop_orchestrator_build_info{version="), "1");
    }

    #[test]
    fn a_fire_is_waiting_then_running_and_off_both_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new(&Instance::new(dir.path()));
        let mut stage = FireStage::dispatched(Some(&metrics));
        assert_eq!((metrics.waiting.get(), metrics.running.get()), (1, 0));
        stage.started();
        stage.started();
        assert_eq!((metrics.waiting.get(), metrics.running.get()), (0, 1));
        drop(stage);
        assert_eq!((metrics.waiting.get(), metrics.running.get()), (0, 0));
        drop(FireStage::dispatched(Some(&metrics)));
        assert_eq!((metrics.waiting.get(), metrics.running.get()), (0, 0));
    }

    #[test]
    fn the_format_follows_accept() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }
}
