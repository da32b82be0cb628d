//! `serve` against a faked clock: both Europe/Berlin daylight-saving transitions of 2026 lived
//! through at an accelerated clock, and the documented behaviour when the system clock is
//! stepped (README "Run it as a service", "Clock steps"; SPEC §2 and §7): forward, instants
//! due for more than a minute fire once, for the latest; back, elapsed-time schedules go on
//! from the new time and fixed-time ones wait for the clock.
//!
//! The clock is libfaketime (the Debian package `faketime`), preloaded into the real binary.
//! It fakes `clock_gettime` (chrono's `Utc::now()`, std's `Instant`), scales `epoll_wait`
//! timeouts by the speed-up, and, since 0.9.10, converts the absolute expiry given to
//! `timerfd_settime` from the faked clock to the real one, speed-up included: the service's
//! deadline timer follows the faked clock unchanged. What libfaketime cannot fake is the
//! kernel's clock-set notification (`TFD_TIMER_CANCEL_ON_SET`), so after a faked step the
//! service notices the new time at its next wake, not at once; the step tests wait for that.
//!
//! Two ways of driving the clock:
//! - `FAKETIME="@2026-10-24 23:57:00 x300"`: start there, run 300 times faster. The service
//!   runs with `TZ=UTC` because libfaketime reads the date with `mktime`. Not faster: the
//!   service takes an instant due for over 60 s as missed (the machine slept) and fires
//!   once for the latest, and at x600 a 100 ms stall of a loaded test machine was enough
//!   (an `every-min` instant of the fall-back test went missing once under a full suite
//!   run). At x300 that takes a 200 ms stall.
//! - `FAKETIME_TIMESTAMP_FILE`, rewritten whole (by rename) while the service runs, holding
//!   `@DATE xN`: when the process takes in a new setting, its clock restarts at DATE exactly
//!   (fractions of a second allowed) and runs N times faster. So a step lands on a literal
//!   instant, whenever the test writes it. The setting is re-read at the first clock read of
//!   each real second (`FAKETIME_CACHE_DURATION=0`), so a step takes effect within a second.
//!   Not at every read (`FAKETIME_NO_CACHE=1`): libfaketime 0.9.10 then re-reads the file at
//!   every clock read into static buffers that all threads share, unlocked, and under a busy
//!   multi-threaded service one read now and then returns the real time and the next restarts
//!   the clock at DATE again: a step back nobody asked for. These tests keep the monotonic
//!   clock real (`FAKETIME_DONT_FAKE_MONOTONIC=1`): libfaketime would otherwise move it with
//!   every step, and tokio's timers (mode timeouts) would fire early.
//!
//! Expected instants come twice for the DST tests: from `Cron::iter_after` (the library the
//! service uses) and from UTC lists written out by hand, so a wrong DST rule in the library
//! cannot pass here. The clock-step tests use hand-written UTC instants only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::Instance;
use loop_orchestrator::cron::Cron;
use loop_orchestrator::timing::{Row, TimingFile};

const BERLIN: &str = "Europe/Berlin";

/// The `LD_PRELOAD` value of the installed libfaketime, asked of its `faketime` wrapper so no
/// library path is written here; `None` (with the reason) when it is not installed.
fn libfaketime() -> Result<&'static str, &'static str> {
    static PRELOAD: OnceLock<Result<String, String>> = OnceLock::new();
    PRELOAD
        .get_or_init(|| {
            let output = Command::new("faketime")
                .args(["-f", "+0", "sh", "-c", "printf %s \"$LD_PRELOAD\""])
                .output()
                .map_err(|err| format!("`faketime` cannot run ({err})"))?;
            let preload = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && preload.contains("faketime") {
                Ok(preload)
            } else {
                Err(format!(
                    "`faketime` did not report its library (status {:?}, LD_PRELOAD {preload:?})",
                    output.status
                ))
            }
        })
        .as_deref()
        .map_err(|e| e.as_str())
}

/// Whether the time tests can run: libfaketime is installed. Without it each test is skipped
/// with a message naming what is missing, unless `LOOP_TEST_REQUIRE_ALL` is set (CI), where
/// a missing tool is a failure.
fn have_faketime() -> bool {
    match libfaketime() {
        Ok(_) => true,
        Err(why) if std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_some() => {
            panic!("{why}: install the Debian package `faketime` (apt-get install faketime)")
        }
        Err(why) => {
            eprintln!(
                "skipped: libfaketime is missing ({why}); install the Debian package `faketime` to run the time tests"
            );
            false
        }
    }
}

fn utc(text: &str) -> DateTime<Utc> {
    text.parse()
        .unwrap_or_else(|err| panic!("bad test instant {text:?}: {err}"))
}

/// `from`, `from + step`, … up to `to` inclusive: plain UTC arithmetic, no cron code.
fn every(step_minutes: i64, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (mut at, to) = (utc(from), utc(to));
    let mut out = Vec::new();
    while at <= to {
        out.push(at);
        at += TimeDelta::minutes(step_minutes);
    }
    out
}

/// An instance whose schedules all run the mode `ok` (`true`), side by side so that a slow
/// cycle never turns a fire into a `skipped` row, with a grace long enough for every
/// dispatched fire to finish at the stop.
fn instance(timezone: &str, schedules: &[(&str, &str)]) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    let entries: Vec<String> = schedules
        .iter()
        .map(|(id, cron)| format!(r#"    {{ "id": "{id}", "task": "t", "cron": "{cron}" }}"#))
        .collect();
    inst.write(
        "schedules.json",
        &format!(
            r#"{{
  "version": 1,
  "timezone": "{timezone}",
  "max_concurrent_cycles": 40,
  "shutdown_grace": "1h",
  "defaults": {{ "modes": ["ok"], "overlap": "parallel" }},
  "schedules": [
{}
  ]
}}
"#,
            entries.join(",\n")
        ),
    );
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    inst
}

/// A `serve` under libfaketime; killed (and its libfaketime shared memory removed) if the
/// test ends early.
struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    fn start(inst: &Instance, clock: &[(&str, &str)]) -> Serve {
        let preload = libfaketime().expect("checked by have_faketime");
        let log = inst.path().join("serve.log");
        let mut command = inst.command(&["--log-format", "json", "serve"]);
        command
            .env("LD_PRELOAD", preload)
            .env("TZ", "UTC")
            .envs(clock.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let serve = Serve {
            child: Some(command.spawn().expect("the binary starts")),
            log,
        };
        common::wait_until(Duration::from_secs(20), "the service serves", || {
            serve.log_text().contains("\"serving\"")
        });
        serve
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                panic!(
                    "serve did not stop within 60 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = child.kill();
            let _ = child.wait();
            // libfaketime removes these at a normal exit only; a later process that gets the
            // same pid would refuse to start while they exist.
            let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
        }
    }
}

/// Waits until `id` has fired at `at` or later, saying what it fired meanwhile if it does not.
fn wait_for_fire(inst: &Instance, id: &str, at: &str, limit: Duration) {
    let at = utc(at);
    let deadline = Instant::now() + limit;
    loop {
        let rows = cycle_rows(inst);
        let instants = fired(&rows, id);
        if instants.last().is_some_and(|t| *t >= at) {
            return;
        }
        if Instant::now() > deadline {
            if rows.is_empty() {
                panic!(
                    "no fire at all in {limit:?} under libfaketime: this libfaketime does not fake \
                     timerfd_settime (0.9.10 and later do)"
                );
            }
            panic!(
                "timed out after {limit:?} waiting for {id} to fire at {at}; it fired {} times, \
                 last at {:?}",
                instants.len(),
                instants.last()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Cycle rows (the summary row of each fire) as the library reads them: a reader that shares
/// the writers' lock, so polling never sees half a row.
fn cycle_rows(inst: &Instance) -> Vec<Row> {
    let log = TimingFile::new(inst.path().join("task_timing.tsv"))
        .read()
        .expect("task_timing.tsv reads");
    assert!(
        log.bad_lines.is_empty(),
        "bad lines in task_timing.tsv: {:?}",
        log.bad_lines
    );
    log.rows.into_iter().filter(|r| r.mode == "cycle").collect()
}

/// Sorted instants that `id` fired, duplicates kept. (Rows without an instant, such as an
/// `escalated` row, are left to the checks that every cycle is `ok`.)
fn fired(rows: &[Row], id: &str) -> Vec<DateTime<Utc>> {
    let mut instants: Vec<DateTime<Utc>> = rows
        .iter()
        .filter(|r| r.schedule == id)
        .filter_map(|r| r.scheduled_at)
        .collect();
    instants.sort();
    instants
}

fn fired_between(rows: &[Row], id: &str, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let (from, to) = (utc(from), utc(to));
    fired(rows, id)
        .into_iter()
        .filter(|t| (from..=to).contains(t))
        .collect()
}

/// The instant the service armed its schedules from (`service.json`, faked clock).
fn armed_from(inst: &Instance) -> DateTime<Utc> {
    loop_orchestrator::state::read_service(&loop_orchestrator::instance::Instance::new(inst.path()))
        .expect("the service writes service.json")
        .started_at
}

/// Every schedule fired exactly the instants `Cron::iter_after` gives from the moment it was
/// armed up to `until`, once each, every cycle `ok`, and nothing after `until`.
fn assert_fires_match_cron(
    rows: &[Row],
    schedules: &[(&str, &str)],
    tz: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) {
    let tz = loop_orchestrator::zone::Zone::parse(tz).expect("time zone");
    for (id, expr) in schedules {
        let cron = Cron::parse(expr).expect("cron");
        let expected: Vec<DateTime<Utc>> = cron
            .iter_after(from, &tz)
            .take_while(|t| *t <= until)
            .collect();
        assert_eq!(
            fired(rows, id),
            expected,
            "{id} ({expr}) from {from} to {until}"
        );
    }
    for r in rows {
        assert_eq!(
            r.status.as_str(),
            "ok",
            "{} at {:?}: {}",
            r.schedule,
            r.scheduled_at,
            r.note
        );
    }
}

/// The schedules of both DST tests (Europe/Berlin).
const DST_SCHEDULES: [(&str, &str); 6] = [
    ("two", "0 0 2 * * *"),
    ("half-past-two", "0 30 2 * * *"),
    ("quarter-past-and-to-two", "0 15,45 2 * * *"),
    ("three", "0 0 3 * * *"),
    ("every-15-min", "0 */15 * * * *"),
    ("every-min", "0 * * * * *"),
];

/// Lives through 2026-10-25 00:00Z–02:05Z (02:00 CEST, the repeated hour 02:00–03:00 twice,
/// 03:00 CET) in about 26 s.
#[test]
fn fall_back_in_berlin_fixed_times_fire_in_the_first_pass_elapsed_times_in_both() {
    if !have_faketime() {
        return;
    }
    let inst = instance(BERLIN, &DST_SCHEDULES);
    let serve = Serve::start(
        &inst,
        &[
            ("FAKETIME", "@2026-10-24 23:57:00 x300"),
            ("FAKETIME_DONT_RESET", "1"),
        ],
    );
    let from = armed_from(&inst);
    wait_for_fire(
        &inst,
        "every-min",
        "2026-10-25T02:05:00Z",
        Duration::from_secs(90),
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);

    // By hand. 02:00 CEST = 00:00Z, 02:00 CET = 01:00Z, 03:00 CET = 02:00Z.
    let (a, b) = ("2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z");
    assert_eq!(
        fired_between(&rows, "two", a, b),
        [utc(a)],
        "02:00 fires in the first pass only"
    );
    assert_eq!(
        fired_between(&rows, "half-past-two", a, b),
        [utc("2026-10-25T00:30:00Z")],
        "02:30 fires at 02:30 CEST only, not again at 02:30 CET"
    );
    assert_eq!(
        fired_between(&rows, "quarter-past-and-to-two", a, b),
        [utc("2026-10-25T00:15:00Z"), utc("2026-10-25T00:45:00Z")],
        "02:15 and 02:45 fire in the first pass only"
    );
    assert_eq!(
        fired_between(&rows, "three", a, b),
        [utc(b)],
        "03:00 exists once, as 03:00 CET"
    );
    assert_eq!(
        fired_between(&rows, "every-15-min", a, b),
        every(15, a, b),
        "every 15 minutes of real time through both passes of 02:00–03:00"
    );
    assert_eq!(
        fired_between(&rows, "every-min", a, b),
        every(1, a, b),
        "every minute of real time, 120 of them in the two local hours 02:xx"
    );

    // And against the library, for the whole run.
    let until = *fired(&rows, "every-min").last().expect("every-min fired");
    assert_fires_match_cron(&rows, &DST_SCHEDULES, BERLIN, from, until);
}

/// Lives through 2026-03-29 00:40Z–01:20Z (01:40 CET, the gap 02:00–03:00, 03:20 CEST) in
/// about 8 s.
#[test]
fn spring_forward_in_berlin_the_skipped_hour_fires_once_at_the_transition() {
    if !have_faketime() {
        return;
    }
    let inst = instance(BERLIN, &DST_SCHEDULES);
    let serve = Serve::start(
        &inst,
        &[
            ("FAKETIME", "@2026-03-29 00:40:00 x300"),
            ("FAKETIME_DONT_RESET", "1"),
        ],
    );
    let from = armed_from(&inst);
    wait_for_fire(
        &inst,
        "every-min",
        "2026-03-29T01:20:00Z",
        Duration::from_secs(90),
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);

    // By hand. 01:45 CET = 00:45Z; the transition 02:00 CET = 03:00 CEST = 01:00Z.
    let (a, b) = ("2026-03-29T00:45:00Z", "2026-03-29T01:15:00Z");
    let transition = [utc("2026-03-29T01:00:00Z")];
    assert_eq!(
        fired_between(&rows, "two", a, b),
        transition,
        "02:00 does not exist: it fires at 03:00 CEST"
    );
    assert_eq!(
        fired_between(&rows, "half-past-two", a, b),
        transition,
        "02:30 does not exist: it fires at 03:00 CEST"
    );
    assert_eq!(
        fired_between(&rows, "quarter-past-and-to-two", a, b),
        transition,
        "02:15 and 02:45 both fall in the gap: one fire at 03:00 CEST"
    );
    assert_eq!(
        fired_between(&rows, "three", a, b),
        transition,
        "03:00 CEST fires once, together with the times the gap swallowed"
    );
    assert_eq!(
        fired_between(&rows, "every-15-min", a, b),
        [
            utc("2026-03-29T00:45:00Z"),
            utc("2026-03-29T01:00:00Z"),
            utc("2026-03-29T01:15:00Z"),
        ],
        "01:45 CET, then 03:00 CEST: nothing for 02:00–02:45"
    );
    assert_eq!(
        fired_between(&rows, "every-min", a, b),
        every(1, a, b),
        "every minute of real time, none for the local times that do not exist"
    );

    let until = *fired(&rows, "every-min").last().expect("every-min fired");
    assert_fires_match_cron(&rows, &DST_SCHEDULES, BERLIN, from, until);
}

/// A libfaketime setting file, rewritten whole by rename so the service never reads half.
struct ClockFile {
    path: PathBuf,
}

impl ClockFile {
    fn new(dir: &Path, setting: &str) -> ClockFile {
        let clock = ClockFile {
            path: dir.join("faketime.rc"),
        };
        clock.set(setting);
        clock
    }

    fn set(&self, setting: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{setting}\n")).expect("write the clock setting");
        std::fs::rename(&tmp, &self.path).expect("rename the clock setting");
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FAKETIME_TIMESTAMP_FILE", self.path.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "0".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }
}

fn start_with_file(inst: &Instance, clock: &ClockFile) -> Serve {
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Serve::start(inst, &env)
}

/// The tests below need the service armed before their first instant; a machine so loaded
/// that starting took seconds makes the rest meaningless, so say so plainly.
fn assert_armed_before(inst: &Instance, first_instant: &str) {
    let from = armed_from(inst);
    assert!(
        from < utc(first_instant),
        "the service armed its schedules at {from}, after {first_instant}: it took too long to \
         start (machine overloaded?)"
    );
}

/// Every second from `from` to `to` inclusive: plain UTC arithmetic, no cron code.
fn every_second(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut at = from;
    while at <= to {
        out.push(at);
        at += TimeDelta::seconds(1);
    }
    out
}

/// `id`'s instants in the order task_timing.tsv holds its cycle rows, which is the order they
/// were dispatched in: every cycle here ends within milliseconds, long before the next fire
/// of its schedule.
fn fired_in_order(rows: &[Row], id: &str) -> Vec<DateTime<Utc>> {
    rows.iter()
        .filter(|r| r.schedule == id)
        .filter_map(|r| r.scheduled_at)
        .collect()
}

type Instants = [DateTime<Utc>];

/// Instants in dispatch order, split at the first one earlier than the one before it: what
/// fired before the clock stepped back and what after. `None` while there is no such step.
fn split_at_step_back(seq: &Instants) -> Option<(&Instants, &Instants)> {
    let at = seq.windows(2).position(|pair| pair[1] < pair[0])? + 1;
    Some(seq.split_at(at))
}

/// The one cycle row of `id` for `instant`.
fn row_for<'a>(rows: &'a [Row], id: &str, instant: &str) -> &'a Row {
    let at = utc(instant);
    let found: Vec<&Row> = rows
        .iter()
        .filter(|r| r.schedule == id && r.scheduled_at == Some(at))
        .collect();
    assert_eq!(found.len(), 1, "{id}: {} cycle rows for {at}", found.len());
    found[0]
}

/// Every row of `id` dispatched at its instant or up to `within` after it: one fire per
/// instant as the clock reaches it, no backlog fired late in a burst.
fn assert_on_time(rows: &[Row], id: &str, within: TimeDelta) {
    for r in rows.iter().filter(|r| r.schedule == id) {
        let at = r.scheduled_at.expect("a fire has its instant");
        let late = r.started_at - at;
        assert!(
            late >= TimeDelta::zero() && late < within,
            "{id}: {at} was dispatched at {} ({} ms late; at most {} ms expected)",
            r.started_at,
            late.num_milliseconds(),
            within.num_milliseconds()
        );
    }
}

fn assert_all_ok(rows: &[Row]) {
    for r in rows {
        assert_eq!(
            r.status.as_str(),
            "ok",
            "{} at {:?}: {}",
            r.schedule,
            r.scheduled_at,
            r.note
        );
    }
}

/// Two forward jumps at 1×. One of ~40 s is a late wake: every instant has been due for less
/// than a minute, so each missed second fires, once, at the wake. One of 2 hours leaves
/// instants due for longer than a minute, which were missed: each schedule fires once, for
/// its latest instant at or before the new time, and resumes from there. By hand: the jump
/// lands at 14:00:55.05, so that is 14:00:00 for per-minute and every-5-min (not 12:02 or
/// 12:05, and not 24 fires), 13:30 for the fixed time inside the gap, and the second of the
/// dispatch for per-second.
#[test]
fn forward_jump_fires_a_late_wake_whole_and_missed_hours_once_for_the_latest_instant() {
    if !have_faketime() {
        return;
    }
    let schedules = [
        ("per-second", "* * * * * *"),
        ("per-minute", "0 * * * * *"),
        ("every-5-min", "0 */5 * * * *"),
        ("half-past-one", "0 30 13 * * *"),
    ];
    let inst = instance("UTC", &schedules);
    let clock = ClockFile::new(inst.path(), "@2026-06-01 12:00:55 x1");
    let serve = start_with_file(&inst, &clock);
    assert_armed_before(&inst, "2026-06-01T12:01:00Z");
    let limit = Duration::from_secs(30);
    wait_for_fire(&inst, "per-minute", "2026-06-01T12:01:00Z", limit);
    clock.set("@2026-06-01 12:01:40.5 x1");
    wait_for_fire(&inst, "per-second", "2026-06-01T12:01:42Z", limit);
    clock.set("@2026-06-01 14:00:55.05 x1");
    wait_for_fire(&inst, "per-minute", "2026-06-01T14:01:00Z", limit);
    wait_for_fire(&inst, "per-second", "2026-06-01T14:01:01Z", limit);
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);
    assert_all_ok(&rows);

    assert_eq!(
        fired(&rows, "per-minute"),
        [
            utc("2026-06-01T12:01:00Z"),
            utc("2026-06-01T14:00:00Z"),
            utc("2026-06-01T14:01:00Z"),
        ],
        "per-minute: 12:01 on time, one fire for the 120 missed minutes (the latest, 14:00), \
         then 14:01 on time"
    );
    assert_eq!(
        fired(&rows, "every-5-min"),
        [utc("2026-06-01T14:00:00Z")],
        "every-5-min: one fire for its 24 missed instants, for the latest"
    );
    assert_eq!(
        fired(&rows, "half-past-one"),
        [utc("2026-06-01T13:30:00Z")],
        "a fixed time the jump passed over fires once"
    );

    let jump = utc("2026-06-01T13:00:00Z");
    let (before, after): (Vec<DateTime<Utc>>, Vec<DateTime<Utc>>) = fired(&rows, "per-second")
        .into_iter()
        .partition(|t| *t < jump);
    let (first, last) = (before[0], *before.last().expect("fired before the jump"));
    assert!(first <= utc("2026-06-01T12:01:00Z") && last >= utc("2026-06-01T12:01:42Z"));
    assert_eq!(
        before,
        every_second(first, last),
        "per-second up to the 2-hour jump: every second once, the ~40 that the short jump \
         passed over included"
    );
    let late = row_for(&rows, "per-second", "2026-06-01T12:01:20Z").started_at;
    assert!(
        late >= utc("2026-06-01T12:01:40.5Z"),
        "12:01:20 fires late, at the wake after the short jump (dispatched {late})"
    );
    assert_eq!(
        row_for(&rows, "per-second", "2026-06-01T12:01:40Z").started_at,
        late,
        "the seconds the short jump passed over are dispatched together"
    );

    // The wake that noticed the 2-hour jump dispatched one fire of each schedule.
    let woke = row_for(&rows, "per-minute", "2026-06-01T14:00:00Z").started_at;
    assert!(
        woke >= utc("2026-06-01T14:00:55.05Z") && woke < utc("2026-06-01T14:00:58Z"),
        "the jump is noticed at the service's next wake (dispatched {woke})"
    );
    for (id, at) in [
        ("every-5-min", "2026-06-01T14:00:00Z"),
        ("half-past-one", "2026-06-01T13:30:00Z"),
    ] {
        assert_eq!(
            row_for(&rows, id, at).started_at,
            woke,
            "{id} fires at that wake"
        );
    }
    let latest_second = DateTime::from_timestamp(woke.timestamp(), 0).expect("in range");
    assert_eq!(
        after.first(),
        Some(&latest_second),
        "per-second: one fire for the ~7200 missed seconds, for the latest second at or \
         before the wake ({woke})"
    );
    assert_eq!(
        row_for(&rows, "per-second", &latest_second.to_rfc3339()).started_at,
        woke,
        "per-second fires at that wake"
    );
    assert_eq!(
        after,
        every_second(latest_second, *after.last().expect("fired after the jump")),
        "per-second then fires every second from the new time on"
    );
    assert!(*after.last().expect("fired") >= utc("2026-06-01T14:01:01Z"));
}

/// The clock steps back ~10 minutes (from about 12:05:03 to 11:55:00.5), re-lived at 60×.
/// Elapsed-time schedules go on from the new time at once, every minute, so their instants of
/// 12:00–12:05 fire again; the fixed-time ones wait for the clock: 12:05:00, which already ran,
/// never runs again, and the seconds of 12:05 that had not run yet run once. An hour field
/// of `*` makes a schedule elapsed-time even with a fixed minute.
#[test]
fn backward_jump_rearms_elapsed_time_schedules_at_once_and_never_reruns_a_fixed_time() {
    if !have_faketime() {
        return;
    }
    let schedules = [
        ("per-minute", "0 * * * * *"),
        ("every-5-min", "0 */5 * * * *"),
        ("five-past-each-hour", "0 5 * * * *"),
        ("noon-five", "0 5 12 * * *"),
        ("each-second-of-noon-five", "* 5 12 * * *"),
    ];
    let inst = instance("UTC", &schedules);
    let clock = ClockFile::new(inst.path(), "@2026-06-01 12:04:55 x1");
    let serve = start_with_file(&inst, &clock);
    assert_armed_before(&inst, "2026-06-01T12:05:00Z");
    let limit = Duration::from_secs(30);
    for id in [
        "per-minute",
        "every-5-min",
        "five-past-each-hour",
        "noon-five",
    ] {
        wait_for_fire(&inst, id, "2026-06-01T12:05:00Z", limit);
    }
    wait_for_fire(
        &inst,
        "each-second-of-noon-five",
        "2026-06-01T12:05:02Z",
        limit,
    );
    clock.set("@2026-06-01 11:55:00.5 x60");
    let stepped = Instant::now();
    common::wait_until(
        Duration::from_secs(15),
        "per-minute fires again after the clock stepped back",
        || split_at_step_back(&fired_in_order(&cycle_rows(&inst), "per-minute")).is_some(),
    );
    let resumed_after = stepped.elapsed();
    wait_for_fire(&inst, "per-minute", "2026-06-01T12:06:00Z", limit);
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);
    assert_all_ok(&rows);

    // At 60×, 11:56:00 is a second after the step back: the service noticed the step at its
    // next wake, not when the clock came back to 12:06 (10 s later).
    assert!(
        resumed_after < Duration::from_secs(5),
        "per-minute fired again {resumed_after:?} after the clock stepped back"
    );
    let mut per_minute = vec![utc("2026-06-01T12:05:00Z")];
    per_minute.extend(every(1, "2026-06-01T11:56:00Z", "2026-06-01T12:06:00Z"));
    assert_eq!(
        fired_in_order(&rows, "per-minute"),
        per_minute,
        "per-minute: 12:05, then from the new time every minute, 12:05 again included"
    );
    assert_eq!(
        fired_in_order(&rows, "every-5-min"),
        [
            utc("2026-06-01T12:05:00Z"),
            utc("2026-06-01T12:00:00Z"),
            utc("2026-06-01T12:05:00Z"),
        ],
        "every-5-min goes on from the new time too"
    );
    assert_eq!(
        fired_in_order(&rows, "five-past-each-hour"),
        [utc("2026-06-01T12:05:00Z"), utc("2026-06-01T12:05:00Z")],
        "`0 5 * * * *` is elapsed-time (its hour field is `*`): 12:05 runs again"
    );
    assert_eq!(
        fired(&rows, "noon-five"),
        [utc("2026-06-01T12:05:00Z")],
        "the fixed time 12:05, which ran before the step back, does not run again"
    );
    assert_eq!(
        fired(&rows, "each-second-of-noon-five"),
        every_second(utc("2026-06-01T12:05:00Z"), utc("2026-06-01T12:05:59Z")),
        "each second of the fixed 12:05 runs once: those that ran before the step back not \
         again, the others when the clock reaches them"
    );
    // One fire per minute as the clock reaches it: nothing dispatched late in a burst.
    assert_on_time(&rows, "per-minute", TimeDelta::seconds(30));
    assert_on_time(&rows, "every-5-min", TimeDelta::seconds(30));
}

/// The clock steps back ~6 s (from about 12:05:03 to 12:04:57.05) at 1×. per-second goes on
/// from the new time at once, one fire a second on time, re-firing the seconds it had fired;
/// per-minute fires 12:05 again; the fixed time 12:05, which already ran, does not.
#[test]
fn backward_step_of_seconds_keeps_per_second_firing_each_second_and_never_reruns_a_fixed_time() {
    if !have_faketime() {
        return;
    }
    let schedules = [
        ("per-second", "* * * * * *"),
        ("per-minute", "0 * * * * *"),
        ("noon-five", "0 5 12 * * *"),
    ];
    let inst = instance("UTC", &schedules);
    let clock = ClockFile::new(inst.path(), "@2026-06-01 12:04:55 x1");
    let serve = start_with_file(&inst, &clock);
    assert_armed_before(&inst, "2026-06-01T12:05:00Z");
    let limit = Duration::from_secs(30);
    wait_for_fire(&inst, "noon-five", "2026-06-01T12:05:00Z", limit);
    wait_for_fire(&inst, "per-minute", "2026-06-01T12:05:00Z", limit);
    wait_for_fire(&inst, "per-second", "2026-06-01T12:05:02Z", limit);
    clock.set("@2026-06-01 12:04:57.05 x1");
    let stepped = Instant::now();
    common::wait_until(
        Duration::from_secs(15),
        "per-second fires again after the clock stepped back",
        || split_at_step_back(&fired_in_order(&cycle_rows(&inst), "per-second")).is_some(),
    );
    let resumed_after = stepped.elapsed();
    common::wait_until(
        Duration::from_secs(30),
        "per-second reaches 12:05:03 again",
        || {
            let seq = fired_in_order(&cycle_rows(&inst), "per-second");
            split_at_step_back(&seq)
                .is_some_and(|(_, after)| after.last() >= Some(&utc("2026-06-01T12:05:03Z")))
        },
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);
    assert_all_ok(&rows);

    assert!(
        resumed_after < Duration::from_secs(5),
        "per-second fired again {resumed_after:?} after the clock stepped back"
    );
    let seq = fired_in_order(&rows, "per-second");
    let (before, after) = split_at_step_back(&seq).expect("a step back");
    let last_before = *before.last().expect("fired before");
    assert!(last_before >= utc("2026-06-01T12:05:02Z"));
    assert_eq!(
        before,
        every_second(before[0], last_before),
        "per-second before the step back: every second once"
    );
    assert_eq!(
        after,
        every_second(
            utc("2026-06-01T12:04:58Z"),
            *after.last().expect("fired after")
        ),
        "per-second after the step back: from 12:04:58 (the first second after the new time \
         12:04:57.05), every second once, with no gap and no second twice"
    );
    assert_on_time(&rows, "per-second", TimeDelta::seconds(1));
    assert_eq!(
        fired_in_order(&rows, "per-minute"),
        [utc("2026-06-01T12:05:00Z"), utc("2026-06-01T12:05:00Z")],
        "per-minute fires 12:05 again when the clock reaches it again"
    );
    assert_eq!(
        fired(&rows, "noon-five"),
        [utc("2026-06-01T12:05:00Z")],
        "the fixed time 12:05 ran before the step back and does not run again"
    );
}

/// The clock steps back two days, to the same wall time (from about 12:05:03 on June 1st to
/// 12:04:50 on May 30th, re-lived at 2×). Beyond three hours the clock was wrong, not
/// adjusted (cronie: "time has changed a lot, run everything"), so the fixed-time schedules
/// start again from the new time and fire at 12:05 on May 30th, not in two days. Only
/// fixed-time schedules here: nothing else could make the service fire on May 30th. A step
/// back of three hours or less keeps them waiting for the clock: see
/// `backward_jump_rearms_elapsed_time_schedules_at_once_and_never_reruns_a_fixed_time`
/// (10 minutes) and
/// `backward_step_of_seconds_keeps_per_second_firing_each_second_and_never_reruns_a_fixed_time`
/// (6 seconds).
#[test]
fn backward_step_of_two_days_rearms_fixed_time_schedules_too() {
    if !have_faketime() {
        return;
    }
    let schedules = [
        ("noon-five", "0 5 12 * * *"),
        ("each-second-of-noon-five", "* 5 12 * * *"),
    ];
    let inst = instance("UTC", &schedules);
    let clock = ClockFile::new(inst.path(), "@2026-06-01 12:04:57 x1");
    let serve = start_with_file(&inst, &clock);
    assert_armed_before(&inst, "2026-06-01T12:05:00Z");
    let limit = Duration::from_secs(30);
    wait_for_fire(&inst, "noon-five", "2026-06-01T12:05:00Z", limit);
    wait_for_fire(
        &inst,
        "each-second-of-noon-five",
        "2026-06-01T12:05:02Z",
        limit,
    );
    clock.set("@2026-05-30 12:04:50 x2");
    let stepped = Instant::now();
    // The fires of May 30th sort before those of June 1st, so look for them by dispatch order.
    common::wait_until(
        Duration::from_secs(20),
        "noon-five fires on May 30th after the clock stepped back two days",
        || split_at_step_back(&fired_in_order(&cycle_rows(&inst), "noon-five")).is_some(),
    );
    let resumed_after = stepped.elapsed();
    common::wait_until(
        Duration::from_secs(20),
        "each-second-of-noon-five reaches 12:05:04 on May 30th",
        || {
            let seq = fired_in_order(&cycle_rows(&inst), "each-second-of-noon-five");
            split_at_step_back(&seq)
                .is_some_and(|(_, after)| after.last() >= Some(&utc("2026-05-30T12:05:04Z")))
        },
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);
    assert_all_ok(&rows);

    // At 2×, May 30th 12:05:00 is 5 s after the step: re-armed at the service's next wake,
    // not when the clock comes back to June 1st.
    assert!(
        resumed_after < Duration::from_secs(10),
        "noon-five fired again {resumed_after:?} after the clock stepped back"
    );
    assert_eq!(
        fired_in_order(&rows, "noon-five"),
        [utc("2026-06-01T12:05:00Z"), utc("2026-05-30T12:05:00Z")],
        "the fixed time 12:05 fires on June 1st, then again on May 30th once the clock stepped \
         back two days, once each"
    );
    let seq = fired_in_order(&rows, "each-second-of-noon-five");
    let (before, after) = split_at_step_back(&seq).expect("a step back");
    let (last_before, last_after) = (
        *before.last().expect("fired before"),
        *after.last().expect("fired after"),
    );
    assert!(last_before >= utc("2026-06-01T12:05:02Z"));
    assert_eq!(
        before,
        every_second(utc("2026-06-01T12:05:00Z"), last_before),
        "each second of 12:05 on June 1st once, up to the step back"
    );
    assert_eq!(
        after,
        every_second(utc("2026-05-30T12:05:00Z"), last_after),
        "after the step back, each second of 12:05 on May 30th once, from 12:05:00: no gap, \
         no second twice"
    );
    // One fire per instant as the clock reaches it (2 s of faked time is 1 s of real time).
    assert_on_time(&rows, "noon-five", TimeDelta::seconds(2));
    assert_on_time(&rows, "each-second-of-noon-five", TimeDelta::seconds(2));
}
