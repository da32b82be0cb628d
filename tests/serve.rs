//! `serve` end to end: the real binary, real signals, real files, a real notify socket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Instance, fixture, process_exists, text};

/// A running `serve`, killed if the test ends early.
struct Serve {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(inst: &Instance, env: &[(&str, &str)]) -> Serve {
        let log = inst.path().join("serve.log");
        let mut command = inst.command(&["--log-format", "json", "serve"]);
        command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let serve = Serve {
            child: Some(command.spawn().unwrap()),
            log,
        };
        common::wait_until(
            Duration::from_secs(10),
            "the service logs that it serves",
            || serve.log_text().contains("\"serving\""),
        );
        serve
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// SIGTERM, then the exit status and how long the stop took.
    fn stop(mut self) -> (Option<i32>, Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        let status = self.child.take().unwrap().wait().unwrap();
        (status.code(), started.elapsed())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log events (JSON lines) whose message is `message`.
    fn events(&self, message: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn instance(schedules: &str, extra: &str) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write(
        "schedules.json",
        &format!("{{\n  \"version\": 1,\n{extra}  \"schedules\": {schedules}\n}}\n"),
    );
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    inst.mode("fail", "[\"false\"]", "prompt = \"none\"");
    inst
}

struct CycleRow {
    schedule: String,
    scheduled_at: String,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
    status: String,
}

fn cycle_rows(inst: &Instance) -> Vec<CycleRow> {
    inst.rows()
        .into_iter()
        .filter(|r| r[7] == "cycle")
        .map(|r| CycleRow {
            schedule: r[5].clone(),
            scheduled_at: r[0].clone(),
            started_at: r[1].parse().unwrap(),
            finished_at: r[2].parse().unwrap(),
            status: r[9].clone(),
        })
        .collect()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn twenty_schedules_every_second_fire_each_instant_exactly_once() {
    let schedules: Vec<String> = (1..=20)
        .map(|i| {
            format!(r#"{{ "id": "s{i:02}", "task": "t", "cron": "* * * * * *", "modes": ["ok"] }}"#)
        })
        .collect();
    let inst = instance(
        &format!("[{}]", schedules.join(", ")),
        "  \"max_concurrent_cycles\": 20,\n",
    );
    let serve = Serve::start(&inst, &[]);
    std::thread::sleep(Duration::from_millis(5_300));
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    let rows = cycle_rows(&inst);
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        assert!(!r.scheduled_at.is_empty(), "a fired cycle has its instant");
        *per.entry((r.schedule.clone(), r.scheduled_at.clone()))
            .or_default() += 1;
    }
    let instants: BTreeSet<&String> = rows.iter().map(|r| &r.scheduled_at).collect();
    assert!(
        instants.len() >= 4,
        "only {} instants in 5.3 s",
        instants.len()
    );
    for instant in &instants {
        for i in 1..=20 {
            let n = per
                .get(&(format!("s{i:02}"), (*instant).clone()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, 1, "schedule s{i:02} has {n} rows for {instant}");
        }
    }
    let mut lateness: Vec<i64> = rows
        .iter()
        .map(|r| {
            (r.started_at
                - r.scheduled_at
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap())
            .num_milliseconds()
        })
        .collect();
    lateness.sort();
    assert!(lateness[0] >= 0, "a cycle started before its instant");
    eprintln!(
        "fire lateness over {} cycles: p50 {} ms, p99 {} ms, max {} ms",
        lateness.len(),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().unwrap()
    );
}

#[test]
fn overlap_skip_records_skipped_instants_and_run_cycle_exits_75() {
    let inst = instance(
        r#"[{ "id": "slow", "task": "t", "cron": "* * * * * *", "modes": ["nap"], "overlap": "skip" }]"#,
        "",
    );
    inst.agent_mode("nap", "FAKE_SLEEP = \"2.5\"", "prompt = \"none\"");
    let serve = Serve::start(&inst, &[]);
    common::wait_until(Duration::from_secs(5), "a cycle runs", || {
        inst.path()
            .join(".loop-orchestrator/runs")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    });
    std::thread::sleep(Duration::from_millis(300));
    let busy = inst.run(&["run-cycle", "--schedule", "slow"]);
    assert_eq!(busy.status.code(), Some(75), "{}", text(&busy));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains(&format!("pid {}", serve.pid())),
        "{}",
        text(&busy)
    );
    std::thread::sleep(Duration::from_millis(5_500));
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    let rows = cycle_rows(&inst);
    let ran: Vec<&CycleRow> = rows.iter().filter(|r| r.status != "skipped").collect();
    let skipped = rows.iter().filter(|r| r.status == "skipped").count();
    assert!(
        ran.len() >= 2 && skipped >= 3,
        "ran {}, skipped {skipped}",
        ran.len()
    );
    for pair in ran.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at,
            "two cycles ran at once"
        );
    }
    let instants: Vec<&String> = rows.iter().map(|r| &r.scheduled_at).collect();
    let distinct: BTreeSet<&String> = instants.iter().copied().collect();
    assert_eq!(instants.len(), distinct.len(), "an instant has two rows");
}

fn reloaded_after(serve: &Serve, count: usize) -> serde_json::Value {
    common::wait_until(Duration::from_secs(5), "the service reloads", || {
        serve.events("reloaded").len()
            + serve
                .events("reload rejected; the last good configuration keeps running")
                .len()
            >= count
    });
    let mut all: Vec<serde_json::Value> = serve.events("reloaded");
    all.extend(serve.events("reload rejected; the last good configuration keeps running"));
    all.sort_by_key(|v| v["timestamp"].as_str().unwrap_or("").to_string());
    all[count - 1].clone()
}

fn fires_of(inst: &Instance, id: &str) -> usize {
    cycle_rows(inst).iter().filter(|r| r.schedule == id).count()
}

/// Replaces schedules.json atomically, as `jq ... > tmp && mv tmp schedules.json` does;
/// returns the moment just before the rename.
fn rename_schedules_over(inst: &Instance, text: &str) -> chrono::DateTime<chrono::Utc> {
    let tmp = inst.path().join("schedules.json.tmp");
    std::fs::write(&tmp, text).unwrap();
    let at = chrono::Utc::now();
    std::fs::rename(&tmp, inst.path().join("schedules.json")).unwrap();
    at
}

#[test]
fn reload_by_rename_sed_and_truncating_writer() {
    let entry = |id: &str| {
        format!(r#"{{ "id": "{id}", "task": "t", "cron": "* * * * * *", "modes": ["ok"] }}"#)
    };
    let file = |ids: &[&str]| {
        let entries: Vec<String> = ids.iter().map(|id| entry(id)).collect();
        format!(
            "{{\n  \"version\": 1,\n  \"max_concurrent_cycles\": 4,\n  \"schedules\": [\n    {}\n  ]\n}}\n",
            entries.join(",\n    ")
        )
    };
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write("schedules.json", &file(&["a"]));
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    let path = inst.path().join("schedules.json");
    let serve = Serve::start(&inst, &[]);
    let mut delays = Vec::new();
    let mut measure = |n: usize, at: chrono::DateTime<chrono::Utc>| {
        let event = reloaded_after(&serve, n);
        let applied: chrono::DateTime<chrono::Utc> =
            event["timestamp"].as_str().unwrap().parse().unwrap();
        delays.push((applied - at).num_milliseconds());
        event
    };

    // 1. An atomic rename, as `jq ... > tmp && mv tmp schedules.json` does.
    let at = rename_schedules_over(&inst, &file(&["a", "b"]));
    assert_eq!(measure(1, at)["fields"]["added"], 1);
    common::wait_until(Duration::from_secs(5), "b fires", || {
        fires_of(&inst, "b") > 0
    });

    // 2. sed -i (a temp file renamed over the original).
    let at = chrono::Utc::now();
    let sed = std::process::Command::new("sed")
        .arg("-i")
        .arg(r#"s/"id": "b"/"id": "c"/"#)
        .arg(&path)
        .status()
        .unwrap();
    assert!(sed.success());
    measure(2, at);
    common::wait_until(Duration::from_secs(5), "c fires", || {
        fires_of(&inst, "c") > 0
    });
    let b_then = fires_of(&inst, "b");

    // 3. Truncate, then write in two chunks 200 ms apart: the half never applies.
    let whole = file(&["a", "c", "d"]);
    let (first, second) = whole.split_at(whole.len() / 2);
    let at = chrono::Utc::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(first.as_bytes()).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    f.write_all(second.as_bytes()).unwrap();
    drop(f);
    common::wait_until(Duration::from_secs(5), "d fires", || {
        fires_of(&inst, "d") > 0
    });
    let applied = serve.events("reloaded").last().unwrap().clone();
    let applied_at: chrono::DateTime<chrono::Utc> =
        applied["timestamp"].as_str().unwrap().parse().unwrap();
    delays.push((applied_at - at).num_milliseconds() - 200);
    assert_eq!(
        fires_of(&inst, "b"),
        b_then,
        "b stopped firing when it was renamed away"
    );

    // 4. A broken edit: rejected with line and column; the last good schedules keep firing.
    let rejected = || {
        serve
            .events("reload rejected; the last good configuration keeps running")
            .len()
    };
    assert!(
        rejected() >= 1,
        "the half-written file was rejected, not applied"
    );
    let rejected_before = rejected();
    let broken = whole.replace(r#""id": "d""#, r#""id": "d", "crn": "x""#);
    std::fs::write(&path, broken).unwrap();
    common::wait_until(
        Duration::from_secs(5),
        "the broken edit is rejected",
        || rejected() > rejected_before,
    );
    let mut stdout = String::new();
    common::wait_until(Duration::from_secs(5), "status shows the rejection", || {
        stdout = String::from_utf8_lossy(&inst.run(&["status"]).stdout).into_owned();
        stdout.contains("REJECTED") && stdout.contains("unknown field \"crn\"")
    });
    assert!(stdout.contains("schedules.json:7:"), "{stdout}");
    let d_before = fires_of(&inst, "d");
    std::thread::sleep(Duration::from_millis(2_200));
    assert!(
        fires_of(&inst, "d") > d_before,
        "d kept firing after the broken edit"
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0), "the service survived every edit");
    // Schedule "a" was in every version of the file: through five reloads it fired each
    // instant exactly once, none lost and none doubled.
    let a: Vec<String> = cycle_rows(&inst)
        .into_iter()
        .filter(|r| r.schedule == "a")
        .map(|r| r.scheduled_at)
        .collect();
    let first: chrono::DateTime<chrono::Utc> = a.first().unwrap().parse().unwrap();
    let last: chrono::DateTime<chrono::Utc> = a.last().unwrap().parse().unwrap();
    assert_eq!(
        a.len() as i64,
        (last - first).num_seconds() + 1,
        "a missed or doubled an instant across reloads: {a:?}"
    );
    eprintln!(
        "reload-to-applied: rename {} ms, sed -i {} ms, truncate+write {} ms after the last chunk",
        delays[0], delays[1], delays[2]
    );
}

#[test]
fn sigterm_interrupts_running_modes_within_the_grace() {
    let schedules: Vec<String> = ["t1", "t2", "t3"]
        .iter()
        .map(|id| {
            format!(
                r#"{{ "id": "{id}", "task": "t", "cron": "* * * * * *", "modes": ["{}"] }}"#,
                if *id == "t3" { "stubborn" } else { "sleeper" }
            )
        })
        .collect();
    let inst = instance(
        &format!("[{}]", schedules.join(", ")),
        "  \"max_concurrent_cycles\": 3,\n  \"shutdown_grace\": \"2s\",\n",
    );
    let pids_dir = inst.path().join("pids");
    std::fs::create_dir(&pids_dir).unwrap();
    let sleeper = format!("[\"{}\"]", fixture("term-sleeper.sh"));
    inst.mode(
        "sleeper",
        &sleeper,
        &format!(
            "prompt = \"none\"\nkill_grace = \"1s\"\nenv = {{ PIDS_DIR = \"{}\" }}",
            pids_dir.display()
        ),
    );
    inst.mode("stubborn", &sleeper, &format!("prompt = \"none\"\nkill_grace = \"1s\"\nenv = {{ PIDS_DIR = \"{}\", IGNORE_TERM = \"1\" }}", pids_dir.display()));
    let serve = Serve::start(&inst, &[]);
    common::wait_until(Duration::from_secs(10), "three modes run", || {
        std::fs::read_dir(&pids_dir).unwrap().count() == 3
    });
    std::thread::sleep(Duration::from_millis(100));
    let (code, took) = serve.stop();
    assert_eq!(code, Some(0));
    assert!(
        took <= Duration::from_secs(2 + 1 + 1),
        "stop took {took:?}; shutdown_grace 2 s + kill_grace 1 s + 1 s"
    );
    let rows = inst.rows();
    let interrupted: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[7] != "cycle" && r[9] == "interrupted")
        .collect();
    assert_eq!(interrupted.len(), 3, "{rows:?}");
    let cycles_interrupted = rows
        .iter()
        .filter(|r| r[7] == "cycle" && r[9] == "interrupted")
        .count();
    assert_eq!(cycles_interrupted, 3);
    for entry in std::fs::read_dir(&pids_dir).unwrap() {
        for pid in std::fs::read_to_string(entry.unwrap().path())
            .unwrap()
            .split_whitespace()
        {
            let pid: i32 = pid.parse().unwrap();
            common::wait_until(Duration::from_secs(5), "the group is reaped", || {
                !process_exists(pid)
            });
        }
    }
    eprintln!("stop with three running modes (one ignoring SIGTERM) took {took:?}");
}

#[test]
fn sd_notify_datagrams() {
    let inst = instance(
        r#"[{ "id": "n", "task": "t", "cron": "0 0 * * * *", "modes": ["ok"] }]"#,
        "",
    );
    let socket_dir = tempfile::tempdir().unwrap();
    let listener = common::NotifyListener::bind_in(socket_dir.path()).unwrap();
    let socket = listener.path().display().to_string();
    let serve = Serve::start(
        &inst,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    );
    let mut seen = Vec::new();
    let recv_until = |what: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(message) = listener.recv_timeout(Duration::from_millis(200)) {
                let hit = message.lines().any(|l| l.starts_with(what));
                seen.push(message.clone());
                if hit {
                    return message;
                }
            }
        }
        panic!("no {what} datagram; saw {seen:?}");
    };
    let ready = recv_until("READY=1", &mut seen);
    assert!(ready.contains("STATUS=1 schedules"), "{ready:?}");
    recv_until("WATCHDOG=1", &mut seen);
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    let reloading = recv_until("RELOADING=1", &mut seen);
    assert!(
        reloading
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=") && l[15..].parse::<u64>().is_ok()),
        "{reloading:?}"
    );
    recv_until("READY=1", &mut seen);
    serve.signal(nix::sys::signal::Signal::SIGTERM);
    recv_until("STOPPING=1", &mut seen);
    let (code, _) = serve.stop_after_signal();
    assert_eq!(code, Some(0));
}

/// A schedule `tick` on `tick_cron`, a schedule `manual` (once a year) whose mode sleeps
/// `sleep` seconds, and one TODO item.
fn todo_instance(tick_cron: &str, sleep: &str) -> Instance {
    let inst = instance(
        &format!(
            r#"[
    {{ "id": "tick", "task": "t", "cron": "{tick_cron}", "modes": ["ok"] }},
    {{ "id": "manual", "task": "t", "cron": "0 0 1 1 *", "modes": ["nap"] }}
  ]"#
        ),
        "",
    );
    inst.agent_mode(
        "nap",
        &format!("FAKE_SLEEP = \"{sleep}\""),
        "prompt = \"none\"",
    );
    inst.write("TODO.md", "# TODO\n- [ ] an item\n");
    inst
}

/// Stops the service (exit 0) and checks that the todo run gave way to `tick` (exit 130).
fn assert_preempted_by_tick(serve: Serve, out: &std::process::Output) {
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    assert_eq!(out.status.code(), Some(130), "{}", text(out));
    assert!(
        text(out).contains("preempted: schedule tick fires at"),
        "{}",
        text(out)
    );
}

#[test]
fn todo_run_gives_way_to_the_next_schedule_fire_of_a_running_service() {
    let inst = todo_instance("*/6 * * * * *", "60");
    let serve = Serve::start(&inst, &[]);
    let started = Instant::now();
    let out = inst.run(&["run-cycle", "--schedule", "manual", "--todo", "1"]);
    let took = started.elapsed();
    assert_preempted_by_tick(serve, &out);
    // The next */6 instant is at most 6 s away; the todo run ends 2 s before it.
    assert!(took < Duration::from_secs(10), "the todo run took {took:?}");
    let rows = inst.rows();
    let todo_cycle = rows
        .iter()
        .find(|r| r[5] == "manual" && r[7] == "cycle")
        .expect("the todo run's cycle row");
    assert_eq!(todo_cycle[4], "todo");
    assert_eq!(todo_cycle[9], "interrupted");
    assert!(
        todo_cycle[12].contains("gives way to the fire of tick at"),
        "{todo_cycle:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[5] == "manual" && r[7] == "nap" && r[9] == "interrupted"),
        "the mode's row is interrupted: {rows:?}"
    );
}

#[test]
fn todo_run_gives_way_to_a_fire_that_an_edit_brings_closer() {
    // At the start the only fire is a year away; an edit while the todo run waits makes
    // `tick` fire every 5 s, and the todo run must give way to it.
    let inst = todo_instance("0 0 1 1 *", "60");
    let serve = Serve::start(&inst, &[]);
    let started = Instant::now();
    let todo = inst
        .command(&["run-cycle", "--schedule", "manual", "--todo", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let edited = inst.read("schedules.json").replace(
        r#""cron": "0 0 1 1 *", "modes": ["ok"]"#,
        r#""cron": "*/5 * * * * *", "modes": ["ok"]"#,
    );
    assert!(edited.contains("*/5"), "{edited}");
    rename_schedules_over(&inst, &edited);
    let out = todo.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_preempted_by_tick(serve, &out);
    // Seen within a recheck (2 s), then at most 5 s to the instant, less the 2 s lead.
    assert!(took < Duration::from_secs(15), "the todo run took {took:?}");
}

#[test]
fn todo_run_without_a_service_is_not_preempted() {
    let inst = todo_instance("* * * * * *", "3");
    let out = inst.run(&["run-cycle", "--schedule", "manual", "--todo", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let rows = inst.rows();
    let cycle = rows.iter().find(|r| r[7] == "cycle").unwrap();
    assert_eq!((cycle[4].as_str(), cycle[9].as_str()), ("todo", "ok"));
}

#[test]
fn status_after_each_dispatch_names_the_next_instant() {
    let inst = instance(
        r#"[{ "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["ok"] }]"#,
        "",
    );
    let socket_dir = tempfile::tempdir().unwrap();
    let listener = common::NotifyListener::bind_in(socket_dir.path()).unwrap();
    let socket = listener.path().display().to_string();
    let serve = Serve::start(&inst, &[("NOTIFY_SOCKET", &socket)]);
    // The `next … at` instants of the STATUS= datagrams that follow READY=1.
    let mut nexts = Vec::new();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while nexts.len() < 3 && Instant::now() < deadline {
        let Some(message) = listener.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        seen.push(message.clone());
        if message.contains("READY=1") {
            continue;
        }
        if let Some(at) = message
            .lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .and_then(|status| status.split("; next tick at ").nth(1))
        {
            nexts.push(at.to_string());
        }
    }
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    assert!(nexts.len() >= 3, "STATUS= after dispatches: {seen:?}");
    assert!(
        nexts.windows(2).all(|w| w[0] < w[1]),
        "each STATUS= names a later next instant: {nexts:?}"
    );
}

impl Serve {
    fn stop_after_signal(mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = self.child.take().unwrap().wait().unwrap();
        (status.code(), started.elapsed())
    }
}

#[test]
fn failing_schedule_escalates_pauses_and_resumes() {
    let marker = tempfile::tempdir().unwrap();
    let escalated_file = marker.path().join("escalated");
    let schedules = format!(
        r#"[
    {{ "id": "x", "task": "t", "cron": "* * * * * *", "modes": ["fail"], "max_failures": 3, "on_escalate": ["touch", "{}"] }},
    {{ "id": "y", "task": "t", "cron": "* * * * * *", "modes": ["flaky"], "max_failures": 3 }}
  ]"#,
        escalated_file.display()
    );
    let inst = instance(&schedules, "  \"max_concurrent_cycles\": 2,\n");
    inst.mode("flaky", "[\"false\"]", "prompt = \"none\"");
    let serve = Serve::start(&inst, &[]);
    let escalated = |id: &str| {
        cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == id && r.status == "escalated")
    };
    common::wait_until(Duration::from_secs(10), "both escalate", || {
        escalated("x") && escalated("y")
    });
    let x_rows: Vec<String> = cycle_rows(&inst)
        .iter()
        .filter(|r| r.schedule == "x")
        .map(|r| r.status.clone())
        .collect();
    assert_eq!(x_rows, ["failed", "failed", "failed", "escalated"]);
    common::wait_until(Duration::from_secs(5), "on_escalate ran", || {
        escalated_file.exists()
    });
    let status = String::from_utf8_lossy(&inst.run(&["status"]).stdout).into_owned();
    assert!(status.contains("x  [ESCALATED"), "{status}");
    assert!(
        inst.read("persistent-memory.md")
            .contains("[x] escalated: 3 consecutive failed cycles")
    );
    std::thread::sleep(Duration::from_millis(2_000));
    assert_eq!(
        fires_of(&inst, "x"),
        4,
        "an escalated schedule does not fire"
    );

    // x: fixing the entry resumes it.
    let edited = inst
        .read("schedules.json")
        .replace(r#""modes": ["fail"]"#, r#""modes": ["ok"]"#);
    inst.write("schedules.json", &edited);
    common::wait_until(Duration::from_secs(5), "x fires ok again", || {
        cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == "x" && r.status == "ok")
    });
    // y: fixing its mode is not a change of the entry; `resume y` lifts the pause.
    inst.mode("flaky", "[\"true\"]", "prompt = \"none\"");
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == "y" && r.status == "ok"),
        "y stays paused until resumed"
    );
    let resumed = inst.run(&["resume", "y"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    common::wait_until(Duration::from_secs(5), "y fires ok again", || {
        cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == "y" && r.status == "ok")
    });
    assert_eq!(serve.stop().0, Some(0));
}

#[test]
fn catch_up_runs_a_missed_instant_once_after_a_restart() {
    let inst = instance(
        r#"[
    { "id": "caught", "task": "t", "cron": "0 * * * * *", "modes": ["ok"], "catch_up": true },
    { "id": "plain", "task": "t", "cron": "0 * * * * *", "modes": ["ok"] }
  ]"#,
        "  \"max_concurrent_cycles\": 2,\n",
    );
    // History: both ran ten minutes ago, then the service was down.
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:00.000Z")
        .to_string();
    let mut tsv = format!("{}\n", common::HEADER);
    for id in ["caught", "plain"] {
        tsv.push_str(&format!(
            "{old}\t{old}\t{old}\t5\tschedule\t{id}\tc-{id}\tcycle\t1\tok\t\t\t\n"
        ));
    }
    inst.write("task_timing.tsv", &tsv);
    let missed_minute = now.format("%Y-%m-%dT%H:%M:00.000Z").to_string();
    let serve = Serve::start(&inst, &[]);
    common::wait_until(Duration::from_secs(5), "the missed instant runs", || {
        cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == "caught" && r.status == "ok" && r.scheduled_at != old)
    });
    let _ = serve.stop();
    // A restart does not catch up again: the instant has its row now.
    let serve = Serve::start(&inst, &[]);
    std::thread::sleep(Duration::from_millis(800));
    let _ = serve.stop();
    let rows = cycle_rows(&inst);
    let at = |r: &CycleRow| {
        r.scheduled_at
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    // Fires for instants before the first start are catch-ups; later ones are ordinary fires.
    let caught: Vec<&CycleRow> = rows
        .iter()
        .filter(|r| r.schedule == "caught" && r.scheduled_at != old && at(r) <= now)
        .collect();
    assert_eq!(caught.len(), 1, "caught up exactly once");
    assert_eq!(
        caught[0].scheduled_at, missed_minute,
        "the last instant before the start"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.schedule == "plain" && r.scheduled_at != old && at(r) <= now),
        "no catch-up without catch_up"
    );
}

#[test]
fn second_serve_exits_2_naming_the_first() {
    let inst = instance(
        r#"[{ "id": "a", "task": "t", "cron": "0 0 * * * *", "modes": ["ok"] }]"#,
        "",
    );
    let serve = Serve::start(&inst, &[]);
    let second = inst.run(&["serve"]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(&format!("pid {}", serve.pid())),
        "{}",
        text(&second)
    );
    let status = String::from_utf8_lossy(&inst.run(&["status"]).stdout).into_owned();
    assert!(
        status.contains(&format!("service   running (pid {})", serve.pid())),
        "{status}"
    );
    assert_eq!(serve.stop().0, Some(0));
}

#[test]
fn overlap_queue_runs_once_after_and_parallel_runs_alongside() {
    let inst = instance(
        r#"[
    { "id": "q", "task": "t", "cron": "* * * * * *", "modes": ["nap"], "overlap": "queue" },
    { "id": "p", "task": "t", "cron": "* * * * * *", "modes": ["nap"], "overlap": "parallel" }
  ]"#,
        "  \"max_concurrent_cycles\": 8,\n",
    );
    inst.agent_mode("nap", "FAKE_SLEEP = \"2.2\"", "prompt = \"none\"");
    let serve = Serve::start(&inst, &[]);
    std::thread::sleep(Duration::from_millis(6_500));
    assert_eq!(serve.stop().0, Some(0));
    let rows = cycle_rows(&inst);
    let q: Vec<&CycleRow> = rows.iter().filter(|r| r.schedule == "q").collect();
    // Cycles that ran, in start order (an instant still queued at the stop gets a "not
    // started" row, written before the cycle that finishes within the grace).
    let mut q_ran: Vec<&&CycleRow> = q.iter().filter(|r| r.status == "ok").collect();
    q_ran.sort_by_key(|r| r.started_at);
    assert!(q_ran.len() >= 2, "{} queued cycles ran", q_ran.len());
    for pair in q_ran.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].finished_at,
            "queue never runs two at once"
        );
        // It ran for an instant that fired while the previous cycle still ran: it was queued,
        // not skipped and not left for the next instant.
        let queued_at: chrono::DateTime<chrono::Utc> = pair[1].scheduled_at.parse().unwrap();
        assert!(
            queued_at < pair[0].finished_at,
            "the queued instant {queued_at} came after the running cycle ended"
        );
    }
    assert!(
        q.iter().any(|r| r.status == "skipped"),
        "fires beyond the one queued are skipped"
    );
    // Every instant has its one row, the one still queued at the stop included.
    let instants: Vec<chrono::DateTime<chrono::Utc>> =
        q.iter().map(|r| r.scheduled_at.parse().unwrap()).collect();
    let distinct: BTreeSet<_> = instants.iter().collect();
    assert_eq!(distinct.len(), instants.len(), "an instant has two rows");
    let (first, last) = (**distinct.first().unwrap(), **distinct.last().unwrap());
    assert_eq!(
        distinct.len() as i64,
        (last - first).num_seconds() + 1,
        "an instant has no row: {instants:?}"
    );
    let p_ran: Vec<&CycleRow> = rows
        .iter()
        .filter(|r| r.schedule == "p" && r.status != "skipped")
        .collect();
    let overlapping = p_ran
        .windows(2)
        .filter(|w| w[1].started_at < w[0].finished_at)
        .count();
    assert!(
        overlapping >= 2,
        "parallel cycles run alongside ({overlapping} overlaps)"
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.schedule == "p" && r.status == "skipped")
    );
}

#[test]
fn max_concurrent_cycles_makes_fires_wait_in_due_order() {
    let schedules: Vec<String> =
        (1..=3).map(|i| format!(r#"{{ "id": "c{i}", "task": "t", "cron": "*/4 * * * * *", "modes": ["nap"], "jitter": "300ms" }}"#)).collect();
    let inst = instance(
        &format!("[{}]", schedules.join(", ")),
        "  \"max_concurrent_cycles\": 1,\n",
    );
    inst.agent_mode("nap", "FAKE_SLEEP = \"0.5\"", "prompt = \"none\"");
    let serve = Serve::start(&inst, &[]);
    common::wait_until(Duration::from_secs(12), "three cycles end", || {
        cycle_rows(&inst)
            .iter()
            .filter(|r| r.status == "ok")
            .count()
            >= 3
    });
    assert_eq!(serve.stop().0, Some(0));
    let mut ran: Vec<CycleRow> = cycle_rows(&inst)
        .into_iter()
        .filter(|r| r.status == "ok")
        .collect();
    ran.sort_by_key(|r| r.finished_at);
    for pair in ran.windows(2) {
        let mode_started = pair[1].finished_at - chrono::Duration::milliseconds(500);
        assert!(
            mode_started >= pair[0].finished_at - chrono::Duration::milliseconds(50),
            "two cycles ran at once with max_concurrent_cycles = 1: {:?}\n{}",
            ran.iter()
                .map(|r| (&r.schedule, r.started_at, r.finished_at))
                .collect::<Vec<_>>(),
            inst.read("task_timing.tsv")
        );
    }
    let notes: Vec<String> = inst
        .rows()
        .into_iter()
        .filter(|r| r[7] == "cycle" && r[9] == "ok")
        .map(|r| r[12].clone())
        .collect();
    assert!(
        notes.iter().all(|n| n.starts_with("jitter ")),
        "the jitter is noted in the row: {notes:?}"
    );
}

#[test]
fn second_sigint_forces_at_once_and_still_records_the_mode() {
    let inst = instance(
        r#"[{ "id": "f", "task": "t", "cron": "* * * * * *", "modes": ["stubborn"] }]"#,
        "  \"shutdown_grace\": \"30s\",\n",
    );
    let pids_dir = inst.path().join("pids");
    std::fs::create_dir(&pids_dir).unwrap();
    inst.mode(
        "stubborn",
        &format!("[\"{}\"]", fixture("term-sleeper.sh")),
        &format!("prompt = \"none\"\nkill_grace = \"30s\"\nenv = {{ PIDS_DIR = \"{}\", IGNORE_TERM = \"1\" }}", pids_dir.display()),
    );
    let serve = Serve::start(&inst, &[]);
    common::wait_until(Duration::from_secs(10), "the mode runs", || {
        pids_dir.join("f").exists()
    });
    serve.signal(nix::sys::signal::Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    serve.signal(nix::sys::signal::Signal::SIGINT);
    let (code, _) = serve.stop_after_signal();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second SIGINT did not force: {:?}",
        started.elapsed()
    );
    let statuses = inst.mode_statuses();
    assert!(
        statuses.contains(&("stubborn".into(), "interrupted".into())),
        "{statuses:?}"
    );
    for pid in std::fs::read_to_string(pids_dir.join("f"))
        .unwrap()
        .split_whitespace()
    {
        let pid: i32 = pid.parse().unwrap();
        common::wait_until(Duration::from_secs(5), "the group is gone", || {
            !process_exists(pid)
        });
    }
}

#[test]
fn fires_waiting_for_a_slot_do_not_start_after_their_schedule_is_disabled() {
    // One slot, held 4 s at a time by `hog`; `w` fires every second (parallel), so its
    // fires wait for the slot. Disabling `w` must drop the waiting ones, with a row each.
    let file = |w_enabled: bool| {
        format!(
            r#"{{
  "version": 1,
  "max_concurrent_cycles": 1,
  "schedules": [
    {{ "id": "hog", "task": "t", "cron": "* * * * * *", "modes": ["nap"] }},
    {{ "id": "w", "task": "t", "cron": "* * * * * *", "modes": ["ok"], "overlap": "parallel", "enabled": {w_enabled} }}
  ]
}}
"#
        )
    };
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write("schedules.json", &file(true));
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    inst.agent_mode("nap", "FAKE_SLEEP = \"4\"", "prompt = \"none\"");
    let serve = Serve::start(&inst, &[]);
    let runs = inst.path().join(".loop-orchestrator/runs");
    common::wait_until(Duration::from_secs(10), "hog runs", || {
        std::fs::read_dir(&runs).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with("-hog"))
        })
    });
    // Fires of `w` pile up behind the running hog.
    std::thread::sleep(Duration::from_millis(2_200));
    let disabled_at = rename_schedules_over(&inst, &file(false));
    reloaded_after(&serve, 1);
    // The hog's cycle ends and the slot frees: nothing of `w` may run any more.
    common::wait_until(Duration::from_secs(10), "the hog's cycle ends", || {
        cycle_rows(&inst)
            .iter()
            .any(|r| r.schedule == "hog" && r.status == "ok" && r.finished_at > disabled_at)
    });
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(serve.stop().0, Some(0));

    let rows = cycle_rows(&inst);
    let ran_after: Vec<_> = rows
        .iter()
        .filter(|r| r.schedule == "w" && r.status != "skipped" && r.started_at > disabled_at)
        .map(|r| (r.scheduled_at.clone(), r.started_at, r.status.clone()))
        .collect();
    assert!(
        ran_after.is_empty(),
        "fires of the disabled schedule started after the edit: {ran_after:?}\n{}",
        inst.read("task_timing.tsv")
    );
    let withdrawn = inst
        .rows()
        .into_iter()
        .filter(|r| {
            r[5] == "w"
                && r[7] == "cycle"
                && r[9] == "skipped"
                && r[12].contains("disabled or removed while the fire waited")
        })
        .count();
    assert!(
        withdrawn >= 1,
        "no waiting fire of w was recorded as withdrawn:\n{}",
        inst.read("task_timing.tsv")
    );
}

/// `status` (and every poller after it) tested a schedule's lock by taking it: a fire that
/// came in that moment was recorded `skipped` "a cycle of this schedule runs in pid <the
/// service's own pid>". The hook widens the probe to 300 ms; a probe that holds nothing
/// cannot make a fire skip however long it takes.
#[test]
fn status_polling_never_makes_a_fire_of_the_service_skip() {
    let inst = instance(
        r#"[ { "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["ok"] } ]"#,
        "",
    );
    let serve = Serve::start(&inst, &[]);
    let started = Instant::now();
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let out = inst
            .command(&["status", "--json"])
            .env("LOOP_ORCHESTRATOR_TEST_PROBE_DELAY_MS", "300")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        polls += 1;
    }
    assert_eq!(serve.stop().0, Some(0));
    assert!(polls >= 3, "{polls} polls");
    let rows = cycle_rows(&inst);
    assert!(rows.len() >= 3, "{} cycle rows", rows.len());
    let notes: Vec<String> = inst
        .rows()
        .into_iter()
        .filter(|r| r[7] == "cycle" && r[9] != "ok")
        .map(|r| format!("{} {}", r[9], r[12]))
        .collect();
    assert!(notes.is_empty(), "fires that did not run: {notes:?}");
}

/// `on_escalate` looked its program up on PATH only (modes also find this very binary when
/// it is not installed), and wrote its log as a loose file in runs/ that retention, which
/// removes run folders, never removed.
#[test]
fn on_escalate_finds_this_binary_off_path_and_logs_in_a_run_folder() {
    let schedules = r#"[
    { "id": "x", "task": "t", "cron": "* * * * * *", "modes": ["fail"], "max_failures": 1,
      "on_escalate": ["loop-orchestrator", "memory", "add", "--section", "Commands", "on_escalate ran"] }
  ]"#;
    let inst = instance(schedules, "");
    // A PATH without this binary's folder (it is not installed in tests).
    let bin_dir = std::path::Path::new(common::BIN).parent().unwrap();
    let path: Vec<_> = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .filter(|p| p != bin_dir && !p.join("loop-orchestrator").exists())
        .collect();
    let path = std::env::join_paths(path).unwrap();
    let serve = Serve::start(&inst, &[("PATH", path.to_str().unwrap())]);
    common::wait_until(
        Duration::from_secs(10),
        "on_escalate added its entry",
        || {
            inst.read("persistent-memory.md")
                .contains("- on_escalate ran")
        },
    );
    // The hook's run folder is marked finished once its process is gone; a stop before that
    // cuts the hook short (as it should), so wait for the mark.
    let runs = inst.path().join(".loop-orchestrator/runs");
    common::wait_until(Duration::from_secs(10), "the hook's run finished", || {
        std::fs::read_dir(&runs).is_ok_and(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.file_name().to_string_lossy().ends_with("-x~escalate")
                    && e.path().join(".finished").exists()
            })
        })
    });
    assert_eq!(serve.stop().0, Some(0));
    let entries: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(
        entries.iter().all(|e| e.file_type().unwrap().is_dir()),
        "only run folders in runs/: {:?}",
        entries.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
    let hook = entries
        .iter()
        .find(|e| e.file_name().to_string_lossy().ends_with("-x~escalate"))
        .expect("a run folder of the hook");
    assert!(hook.path().join("on_escalate.log").is_file());
    assert!(
        hook.path().join(".finished").is_file(),
        "finished, so retention may remove it"
    );
}
