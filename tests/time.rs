//! `serve` against a faked clock: both Europe/Berlin daylight-saving transitions of 2026 lived
//! through at an accelerated clock, and the documented behaviour after the system clock jumps
//! forward 2 hours or back 1 hour (README "Run it as a service", SPEC §2 and §7).
//!
//! The clock is libfaketime (the Debian package `faketime`), preloaded into the real binary.
//! It fakes `clock_gettime` (chrono's `Utc::now()`, std's `Instant`), scales `epoll_wait`
//! timeouts by the speed-up, and, since 0.9.10, converts the absolute expiry given to
//! `timerfd_settime` from the faked clock to the real one, speed-up included: the service's
//! deadline timer follows the faked clock unchanged. What libfaketime cannot fake is the
//! kernel's clock-set notification (`TFD_TIMER_CANCEL_ON_SET`), so after a faked jump the
//! service notices the new time at its next wake, not at once; the jump tests wait for that.
//!
//! Two ways of driving the clock:
//! - `FAKETIME="@2026-10-24 23:57:00 x600"`: start there, run 600 times faster. The service
//!   runs with `TZ=UTC` because libfaketime reads the date with `mktime`.
//! - `FAKETIME_TIMESTAMP_FILE` with `FAKETIME_NO_CACHE=1`: the setting is re-read at every
//!   clock read, so rewriting the file (whole, by rename) moves the clock while the service
//!   runs. `+SECONDS xN` is an offset from the real clock: changing only the offset jumps by
//!   exactly the difference. `@DATE xN` restarts the clock at DATE when the service next reads
//!   it, which is how a test changes speed without a jump of its own. Those tests keep the
//!   monotonic clock real (`FAKETIME_DONT_FAKE_MONOTONIC=1`): libfaketime would otherwise move
//!   it with every jump, and tokio's timers (mode timeouts) would fire early.
//!
//! Expected instants come twice: from `Cron::iter_after` (the library the service uses) and
//! from UTC lists written out by hand, so a wrong DST rule in the library cannot pass here.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use common::Instance;
use loop_orchestrator::cron::Cron;
use loop_orchestrator::timing::{Row, TimingFile};

const BERLIN: &str = "Europe/Berlin";

/// The `LD_PRELOAD` value of the installed libfaketime, asked of its `faketime` wrapper so no
/// library path is written here.
fn libfaketime() -> &'static str {
    static PRELOAD: OnceLock<String> = OnceLock::new();
    PRELOAD.get_or_init(|| {
        let output = Command::new("faketime")
            .args(["-f", "+0", "sh", "-c", "printf %s \"$LD_PRELOAD\""])
            .output();
        let output = match output {
            Ok(output) => output,
            Err(err) => panic!(
                "libfaketime is needed for the time tests and `faketime` cannot run ({err}): \
                 install the Debian package `faketime` (apt-get install faketime)"
            ),
        };
        let preload = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(
            output.status.success() && preload.contains("faketime"),
            "`faketime` did not report its library (status {:?}, LD_PRELOAD {preload:?}): \
             install the Debian package `faketime`",
            output.status
        );
        preload
    })
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
    /// When it was spawned, on the real clock.
    spawned: Instant,
}

impl Serve {
    fn start(inst: &Instance, clock: &[(&str, &str)]) -> Serve {
        let preload = libfaketime();
        let log = inst.path().join("serve.log");
        let mut command = inst.command(&["--log-format", "json", "serve"]);
        command
            .env("LD_PRELOAD", preload)
            .env("TZ", "UTC")
            .envs(clock.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let spawned = Instant::now();
        let serve = Serve {
            child: Some(command.spawn().expect("the binary starts")),
            log,
            spawned,
        };
        wait_until(Duration::from_secs(20), "the service serves", || {
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

fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
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
    loop_orchestrator::state::read_service(inst.path())
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
    let tz: Tz = tz.parse().expect("time zone");
    for (id, expr) in schedules {
        let cron = Cron::parse(expr).expect("cron");
        let expected: Vec<DateTime<Utc>> = cron
            .iter_after(from, tz)
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
/// 03:00 CET) in about 13 s.
#[test]
fn fall_back_in_berlin_fixed_times_fire_in_the_first_pass_elapsed_times_in_both() {
    let inst = instance(BERLIN, &DST_SCHEDULES);
    let serve = Serve::start(
        &inst,
        &[
            ("FAKETIME", "@2026-10-24 23:57:00 x600"),
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
/// about 4 s.
#[test]
fn spring_forward_in_berlin_the_skipped_hour_fires_once_at_the_transition() {
    let inst = instance(BERLIN, &DST_SCHEDULES);
    let serve = Serve::start(
        &inst,
        &[
            ("FAKETIME", "@2026-03-29 00:40:00 x600"),
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
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }
}

/// The `+SECONDS` offset from the real clock to `at`.
fn offset_to(at: DateTime<Utc>) -> f64 {
    (at - Utc::now()).num_milliseconds() as f64 / 1000.0
}

fn start_with_file(inst: &Instance, clock: &ClockFile) -> Serve {
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Serve::start(inst, &env)
}

/// Records when (real clock) each fire of `id` was first seen in task_timing.tsv.
struct Watch<'a> {
    inst: &'a Instance,
    id: &'a str,
    seen: BTreeMap<DateTime<Utc>, Instant>,
}

impl<'a> Watch<'a> {
    fn new(inst: &'a Instance, id: &'a str) -> Watch<'a> {
        Watch {
            inst,
            id,
            seen: BTreeMap::new(),
        }
    }

    fn poll(&mut self) {
        let now = Instant::now();
        for t in fired(&cycle_rows(self.inst), self.id) {
            self.seen.entry(t).or_insert(now);
        }
    }

    fn until(&mut self, limit: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        wait_until(limit, what, || {
            self.poll();
            check(self)
        });
    }

    fn last(&self) -> Option<DateTime<Utc>> {
        self.seen.keys().next_back().copied()
    }
}

/// Instants from the first to the last of `fired`, one step apart, none twice.
fn assert_contiguous(id: &str, fired: &[DateTime<Utc>], step: TimeDelta) {
    for pair in fired.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            step,
            "{id}: {} follows {} (a re-fired, missing or foreign instant)",
            pair[1],
            pair[0]
        );
    }
}

/// A forward jump of 2 hours: a schedule with more than 60 instants due at once (per second:
/// ~7200, per minute: 120) fires once, for the first of them, and resumes from now; one with
/// fewer (every 5 minutes: 24) fires each of them once.
#[test]
fn forward_jump_of_two_hours_fires_a_long_backlog_once_and_a_short_one_whole() {
    let schedules = [
        ("per-second", "* * * * * *"),
        ("per-minute", "0 * * * * *"),
        ("every-5-min", "0 */5 * * * *"),
    ];
    let inst = instance("UTC", &schedules);
    let start = utc("2026-06-01T12:00:50Z");
    let offset = offset_to(start);
    let clock = ClockFile::new(inst.path(), &format!("{offset:+.3} x10"));
    let serve = start_with_file(&inst, &clock);
    wait_for_fire(
        &inst,
        "per-minute",
        "2026-06-01T12:01:00Z",
        Duration::from_secs(30),
    );
    clock.set(&format!("{:+.3} x10", offset + 7_200.0));
    wait_for_fire(
        &inst,
        "per-minute",
        "2026-06-01T14:02:00Z",
        Duration::from_secs(60),
    );
    wait_for_fire(
        &inst,
        "per-second",
        "2026-06-01T14:02:01Z",
        Duration::from_secs(30),
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    let rows = cycle_rows(&inst);
    let jumped = utc("2026-06-01T13:00:00Z");
    let after_jump = |id: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.schedule == id && r.started_at >= jumped)
            .collect()
    };

    // The jump's backlog was dispatched at one moment, by the first wake after the jump.
    let dispatched = after_jump("every-5-min")
        .iter()
        .map(|r| r.started_at)
        .min()
        .expect("every-5-min fired after the jump");
    assert!(dispatched >= utc("2026-06-01T14:00:00Z"));
    let resumed_second = dispatched.duration_trunc_secs() + TimeDelta::seconds(1);

    // every-5-min: 24 instants due at once (≤ 60), each fired once, all at that moment.
    let five = fired(&rows, "every-5-min");
    assert_eq!(
        five,
        every(5, "2026-06-01T12:05:00Z", "2026-06-01T14:00:00Z"),
        "every missed instant of every-5-min fires once"
    );
    assert!(
        after_jump("every-5-min")
            .iter()
            .all(|r| r.started_at == dispatched),
        "the 24 instants are dispatched together"
    );

    // per-minute: 12:01 on time, the backlog of 120 as one fire for 12:02, then 14:02.
    let minute: Vec<DateTime<Utc>> = fired(&rows, "per-minute")
        .into_iter()
        .filter(|t| *t <= utc("2026-06-01T14:02:00Z"))
        .collect();
    assert_eq!(
        minute,
        [
            utc("2026-06-01T12:01:00Z"),
            utc("2026-06-01T12:02:00Z"),
            utc("2026-06-01T14:02:00Z"),
        ],
        "per-minute: one fire for the 120 missed minutes, then on time from now"
    );
    let backlog: Vec<&Row> = rows
        .iter()
        .filter(|r| r.schedule == "per-minute" && r.scheduled_at == Some(minute[1]))
        .collect();
    assert_eq!(backlog[0].started_at, dispatched, "12:02 fires at the jump");

    // per-second: on time up to the jump, one fire for the first missed second, then every
    // second from the moment of the jump on.
    let per_second: Vec<&Row> = rows.iter().filter(|r| r.schedule == "per-second").collect();
    let instant = |r: &&Row| r.scheduled_at.expect("a fire has its instant");
    let mut on_time: Vec<DateTime<Utc>> = per_second
        .iter()
        .filter(|r| r.started_at < jumped)
        .map(instant)
        .collect();
    on_time.sort();
    assert_contiguous(
        "per-second before the jump",
        &on_time,
        TimeDelta::seconds(1),
    );
    let late: Vec<&&Row> = per_second
        .iter()
        .filter(|r| r.started_at >= jumped && instant(r) < jumped)
        .collect();
    assert_eq!(late.len(), 1, "one fire for the ~7200 missed seconds");
    assert_eq!(
        instant(late[0]),
        *on_time.last().expect("fired before the jump") + TimeDelta::seconds(1),
        "the backlog fire is the first missed second"
    );
    assert_eq!(late[0].started_at, dispatched, "it fires at the jump");
    let mut after: Vec<DateTime<Utc>> = per_second
        .iter()
        .filter(|r| instant(r) >= jumped)
        .map(instant)
        .collect();
    after.sort();
    assert_eq!(
        after.first().copied(),
        Some(resumed_second),
        "per-second resumes at the first second after the jump"
    );
    assert_contiguous("per-second after the jump", &after, TimeDelta::seconds(1));
    assert!(rows.iter().all(|r| r.status.as_str() == "ok"));
}

trait TruncSecs {
    fn duration_trunc_secs(self) -> Self;
}

impl TruncSecs for DateTime<Utc> {
    fn duration_trunc_secs(self) -> Self {
        DateTime::from_timestamp(self.timestamp(), 0).expect("in range")
    }
}

/// A backward jump of exactly 1 hour at 600× speed: nothing already fired fires again, the
/// repeated hour adds no fire, and the per-minute schedule is silent until the clock passes
/// its next instant again (an hour of faked time, ~6 s here), then fires every minute.
#[test]
fn backward_jump_of_one_hour_refires_nothing_and_a_per_minute_schedule_waits_for_the_clock() {
    let schedules = [("per-minute", "0 * * * * *")];
    let inst = instance("UTC", &schedules);
    let offset = offset_to(utc("2026-06-01T12:00:30Z"));
    let clock = ClockFile::new(inst.path(), &format!("{offset:+.3} x600"));
    let serve = start_with_file(&inst, &clock);
    let mut watch = Watch::new(&inst, "per-minute");
    watch.until(Duration::from_secs(30), "per-minute fires at 12:03", |w| {
        w.last() >= Some(utc("2026-06-01T12:03:00Z"))
    });
    clock.set(&format!("{:+.3} x600", offset - 3_600.0));
    let jumped = Instant::now();
    watch.until(
        Duration::from_secs(60),
        "per-minute fires again, well after the jump",
        |w| {
            w.seen
                .values()
                .filter(|seen| **seen > jumped + Duration::from_secs(2))
                .count()
                >= 3
        },
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    watch.poll();

    let minutes = fired(&cycle_rows(&inst), "per-minute");
    assert_eq!(
        minutes.first(),
        Some(&utc("2026-06-01T12:01:00Z")),
        "nothing of the repeated hour (11:0x) fires"
    );
    assert_contiguous("per-minute", &minutes, TimeDelta::minutes(1));
    // The silence: the last fire before the jump and the first after it are seconds apart on
    // the real clock, while one faked minute takes 0.1 s.
    let seen: Vec<(DateTime<Utc>, Instant)> = watch.seen.iter().map(|(t, i)| (*t, *i)).collect();
    let gap = seen
        .windows(2)
        .map(|pair| pair[1].1.duration_since(pair[0].1))
        .max()
        .expect("several fires");
    assert!(
        gap >= Duration::from_secs(3),
        "per-minute fired again after {gap:?}: it did not wait for the clock to re-live the hour"
    );
    assert!(cycle_rows(&inst).iter().all(|r| r.status.as_str() == "ok"));
}

/// A backward jump of one hour for a per-second schedule: nothing already fired fires again
/// and the schedule waits for the clock to pass its next instant. The hour is re-lived at 600×
/// (`@DATE x600`), then the clock slows to 1× shortly before that instant (`@DATE x1`), so the
/// first fire after the jump can be seen to come exactly when the clock reaches it. With
/// `@DATE`, libfaketime applies the jump at the service's next clock read, so the jump is one
/// hour to within the second between two fires.
#[test]
fn backward_jump_of_one_hour_refires_nothing_and_a_per_second_schedule_waits_for_the_clock() {
    let schedules = [("per-second", "* * * * * *")];
    let inst = instance("UTC", &schedules);
    let start = utc("2026-06-01T12:00:57Z");
    let clock = ClockFile::new(
        inst.path(),
        &format!("@{} x1", start.format("%Y-%m-%d %H:%M:%S")),
    );
    let serve = start_with_file(&inst, &clock);
    let mut watch = Watch::new(&inst, "per-second");
    watch.until(
        Duration::from_secs(30),
        "per-second fires at 12:01:01",
        |w| w.last() >= Some(utc("2026-06-01T12:01:01Z")),
    );
    let faked_now = start
        + TimeDelta::from_std(serve.spawned.elapsed()).expect("elapsed")
        + TimeDelta::milliseconds(500);
    let back = faked_now - TimeDelta::hours(1);
    clock.set(&format!("@{} x600", back.format("%Y-%m-%d %H:%M:%S")));
    // The service applies the jump at its next wake (within a second); its cycles end soon
    // after. The re-lived hour takes 6 s at 600x: slow down well before its end.
    std::thread::sleep(Duration::from_millis(2_500));
    watch.poll();
    let last_before = watch.last().expect("fired before the jump");
    let slow_down_at = last_before + TimeDelta::seconds(1) - TimeDelta::seconds(3);
    clock.set(&format!("@{} x1", slow_down_at.format("%Y-%m-%d %H:%M:%S")));
    let next = last_before + TimeDelta::seconds(1);
    watch.until(
        Duration::from_secs(60),
        "per-second fires again after the jump",
        |w| w.last() >= Some(next + TimeDelta::seconds(2)),
    );
    assert_eq!(serve.stop(), Some(0), "serve exits 0");
    watch.poll();

    let rows = cycle_rows(&inst);
    let seconds = fired(&rows, "per-second");
    assert!(
        seconds.iter().all(|t| *t > start),
        "nothing of the repeated hour fires"
    );
    assert_contiguous("per-second", &seconds, TimeDelta::seconds(1));
    let first_after = rows
        .iter()
        .find(|r| r.scheduled_at == Some(next))
        .expect("the next second fires");
    assert!(
        first_after.started_at >= next && first_after.started_at - next < TimeDelta::seconds(2),
        "{next} fires when the clock reaches it again (started {})",
        first_after.started_at
    );
    let gap = watch.seen[&next].duration_since(watch.seen[&last_before]);
    assert!(
        gap >= Duration::from_secs(3),
        "per-second fired again after {gap:?}: it did not wait for the clock to re-live the hour"
    );
    assert!(rows.iter().all(|r| r.status.as_str() == "ok"));
}
