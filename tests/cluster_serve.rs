//! `serve` as a cluster node (SPEC §11), end to end: the real binary, several instance
//! directories on one real PostgreSQL, real signals. Each test makes a database of its own
//! (see `common/pg.rs`); without `LOOP_TEST_POSTGRES` those tests say so and pass.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::{Instance, text};
use pg::{Proxy, TestDb};

const LEASE: &str = "3s";

/// A `serve` process, killed if the test ends early.
struct Serve {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(inst: &Instance, env: &[(&str, &str)]) -> Serve {
        let serve = Serve::spawn(inst, env);
        serve.wait_serving();
        serve
    }

    fn spawn(inst: &Instance, env: &[(&str, &str)]) -> Serve {
        let log = inst.path().join("serve.log");
        let mut command = inst.command(&["--log-format", "json", "serve"]);
        command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        Serve {
            child: Some(command.spawn().unwrap()),
            log,
        }
    }

    fn wait_serving(&self) {
        common::wait_until(Duration::from_secs(15), "the service serves", || {
            self.log_text().contains("\"serving\"")
        });
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.take().unwrap().wait().unwrap().code()
    }

    /// SIGKILL, as a power cut would.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

/// An instance directory of node `node`: `schedules` (a JSON array), the modes the tests
/// use, and a cluster section without a URL (it comes from the environment).
fn node(node: &str, schedules: &str) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write(
        "schedules.json",
        &format!(
            "{{\n  \"version\": 1,\n  \"max_concurrent_cycles\": 16,\n  \"shutdown_grace\": \"5s\",\n  \"cluster\": {{\"node\": \"{node}\", \"lease\": \"{LEASE}\"}},\n  \"schedules\": {schedules}\n}}\n"
        ),
    );
    inst.mode("ok", "[\"true\"]", "prompt = \"none\"");
    // Hangs while the instance has a `hang` file, fails while it has a `fail` file.
    inst.mode(
        "slow",
        r#"["sh", "-c", "if [ -e \"$LOOP_DIR/hang\" ]; then exec sleep 120; fi"]"#,
        "prompt = \"none\"\nkill_grace = \"1s\"",
    );
    inst.mode(
        "flaky",
        r#"["sh", "-c", "if [ -e \"$LOOP_DIR/fail\" ]; then exit 1; fi"]"#,
        "prompt = \"none\"",
    );
    inst
}

fn env(url: &str) -> Vec<(&'static str, String)> {
    vec![("LOOP_ORCHESTRATOR_POSTGRES", url.to_string())]
}

fn start(inst: &Instance, url: &str) -> Serve {
    let env = env(url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Serve::start(inst, &env)
}

#[derive(Debug, Clone)]
struct CycleRow {
    scheduled_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    schedule: String,
    cycle: String,
    attempt: u32,
    status: String,
    note: String,
}

fn cycle_rows(inst: &Instance) -> Vec<CycleRow> {
    inst.rows()
        .into_iter()
        .filter(|r| r[7] == "cycle" && !r[0].is_empty())
        .map(|r| CycleRow {
            scheduled_at: r[0].parse().unwrap(),
            finished_at: r[2].parse().unwrap(),
            schedule: r[5].clone(),
            cycle: r[6].clone(),
            attempt: r[8].parse().unwrap(),
            status: r[9].clone(),
            note: r[12].clone(),
        })
        .collect()
}

fn every_second(ids: &[&str], mode: &str, extra: &str) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{{\"id\": \"{id}\", \"task\": \"t\", \"cron\": \"* * * * * *\", \"modes\": [\"{mode}\"]{extra}}}"
            )
        })
        .collect();
    format!("[{}]", entries.join(", "))
}

fn status_json(inst: &Instance) -> serde_json::Value {
    let out = inst.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn two_nodes_on_the_same_schedules_write_one_cycle_row_per_instant() {
    let Some(db) = TestDb::new() else { return };
    let ids = ["s1", "s2", "s3", "s4", "s5"];
    let schedules = every_second(&ids, "ok", "");
    let (a, b) = (node("a", &schedules), node("b", &schedules));
    let serve_a = start(&a, &db.url);
    let serve_b = start(&b, &db.url);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(serve_a.stop(), Some(0));
    assert_eq!(serve_b.stop(), Some(0));

    let (rows_a, rows_b) = (cycle_rows(&a), cycle_rows(&b));
    let mut seen: BTreeMap<(String, DateTime<Utc>), Vec<&str>> = BTreeMap::new();
    for (name, rows) in [("a", &rows_a), ("b", &rows_b)] {
        for r in rows.iter() {
            assert_eq!(r.status, "ok", "{r:?}");
            seen.entry((r.schedule.clone(), r.scheduled_at))
                .or_default()
                .push(name);
        }
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| n.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "instants with two cycle rows: {doubled:?}"
    );
    // Every second from each schedule's first instant to its last is there, once.
    for id in ids {
        let instants: Vec<DateTime<Utc>> = seen
            .keys()
            .filter(|(s, _)| s == id)
            .map(|(_, t)| *t)
            .collect();
        assert!(instants.len() >= 8, "{id}: {} instants", instants.len());
        for pair in instants.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                TimeDelta::seconds(1),
                "{id}: a missing instant after {}",
                pair[0]
            );
        }
    }
    // A real contest: both nodes dispatched every instant (the node whose claim commits
    // first usually wins all five schedules of an instant, so the split varies).
    for inst in [&a, &b] {
        let fired = inst
            .read("serve.log")
            .matches("\"message\":\"fired\"")
            .count();
        assert!(fired >= 40, "{} fired {fired} times", inst.path().display());
    }
    eprintln!("cycle rows: a {}, b {}", rows_a.len(), rows_b.len());
    assert_eq!(
        db.count("SELECT count(*) FROM claims WHERE state <> 'done'"),
        0,
        "every claim ended"
    );
}

#[test]
fn a_node_killed_while_its_cycle_runs_is_taken_over_within_one_lease_and_rerun_with_catch_up() {
    let Some(db) = TestDb::new() else { return };
    let schedules = every_second(&["long"], "slow", ", \"catch_up\": true");
    let (a, b) = (node("a", &schedules), node("b", &schedules));
    a.write("hang", "");
    let serve_a = start(&a, &db.url);
    // a claims an instant and its mode hangs.
    let runs = a.path().join(".loop-orchestrator/runs");
    let mut cycle = String::new();
    common::wait_until(Duration::from_secs(10), "a runs a cycle", || {
        let pids = std::fs::read_dir(a.path().join(".loop-orchestrator/pids"))
            .map(|d| d.count())
            .unwrap_or(0);
        if pids == 0 {
            return false;
        }
        let names: Vec<String> = std::fs::read_dir(&runs)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        match names.first() {
            Some(name) if names.len() == 1 => {
                cycle = name.clone();
                true
            }
            _ => false,
        }
    });
    let serve_b = start(&b, &db.url);
    std::thread::sleep(Duration::from_millis(2500));
    // Power cut: the supervisor and its mode die at once.
    let groups: Vec<i32> = std::fs::read_dir(a.path().join(".loop-orchestrator/pids"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .parse()
                .ok()
        })
        .collect();
    serve_a.kill();
    let killed_at = Utc::now();
    for group in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(group),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    // b writes the interrupted row of a's cycle, then runs the instant again (catch_up).
    let mut taken = None;
    common::wait_until(
        Duration::from_secs(12),
        "b records a's cycle interrupted",
        || {
            taken = cycle_rows(&b)
                .into_iter()
                .find(|r| r.cycle == cycle && r.status == "interrupted");
            taken.is_some()
        },
    );
    let taken = taken.unwrap();
    let detected = taken.finished_at - killed_at;
    eprintln!(
        "lease {LEASE}: the takeover row came {} ms after the kill",
        detected.num_milliseconds()
    );
    // Within one lease of the last renewal (at most a third of a lease before the kill),
    // plus the takeover pass every third of a lease, plus slack for this loaded machine.
    assert!(
        detected <= TimeDelta::milliseconds(5_000),
        "takeover after {detected:?}"
    );
    assert_eq!(taken.attempt, 1);
    assert!(
        taken.note.contains("node a stopped renewing its lease"),
        "{}",
        taken.note
    );
    let instant = taken.scheduled_at;
    common::wait_until(Duration::from_secs(10), "b reruns the instant", || {
        cycle_rows(&b)
            .iter()
            .any(|r| r.scheduled_at == instant && r.attempt == 2 && r.status == "ok")
    });
    // a never wrote a cycle row for it; b wrote exactly the two (interrupted, attempt 2).
    assert!(cycle_rows(&a).iter().all(|r| r.scheduled_at != instant));
    let for_instant: Vec<(u32, String)> = cycle_rows(&b)
        .into_iter()
        .filter(|r| r.scheduled_at == instant)
        .map(|r| (r.attempt, r.status))
        .collect();
    assert_eq!(
        for_instant,
        vec![(1, "interrupted".to_string()), (2, "ok".to_string())]
    );
    // While a ran the schedule, b's instants were skipped by overlap, across nodes.
    assert!(
        cycle_rows(&b)
            .iter()
            .any(|r| r.status == "skipped" && r.note.contains("still runs on node a")),
        "b skipped nothing because of a's cycle: {:?}",
        cycle_rows(&b)
    );
    assert_eq!(serve_b.stop(), Some(0));
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM claims WHERE schedule = 'long' AND scheduled_at = '{}'
               AND ((attempt = 1 AND node = 'a' AND state = 'interrupted' AND taken_over_by = 'b')
                 OR (attempt = 2 AND node = 'b' AND state = 'done' AND status = 'ok'))",
            instant.to_rfc3339()
        )),
        2,
        "attempt 1 taken over by b, attempt 2 run by b"
    );
}

#[test]
fn a_node_cut_off_its_database_writes_nothing_says_so_and_resumes_when_it_returns() {
    let Some(db) = TestDb::new() else { return };
    let proxy = Proxy::start(db.upstream());
    let a = node("a", &every_second(&["tick"], "ok", ""));
    let notify_dir = tempfile::tempdir().unwrap();
    let listener = common::NotifyListener::bind_in(notify_dir.path()).unwrap();
    let url = db.via(&proxy);
    let socket = listener.path().display().to_string();
    let serve = Serve::start(
        &a,
        &[
            ("LOOP_ORCHESTRATOR_POSTGRES", url.as_str()),
            ("NOTIFY_SOCKET", socket.as_str()),
        ],
    );
    common::wait_until(Duration::from_secs(10), "the node fires", || {
        cycle_rows(&a).len() >= 2
    });
    proxy.cut();
    let cut_at = Utc::now();
    common::wait_until(Duration::from_secs(10), "status shows the outage", || {
        status_json(&a)["service"]["cluster"]["state"] == "down"
    });
    let mut unreachable = false;
    while let Some(message) = listener.recv_timeout(Duration::from_millis(100)) {
        unreachable |= message.contains("STATUS=") && message.contains("database unreachable");
    }
    assert!(unreachable, "sd_notify STATUS= said nothing of the outage");
    let shown = a.run(&["status"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.contains("DATABASE UNREACHABLE since"), "{shown}");
    std::thread::sleep(Duration::from_secs(5));
    let restored_at = Utc::now();
    proxy.restore();
    common::wait_until(Duration::from_secs(15), "the node fires again", || {
        cycle_rows(&a)
            .iter()
            .any(|r| r.scheduled_at > restored_at && r.status == "ok")
    });
    assert_eq!(
        status_json(&a)["service"]["cluster"]["state"],
        "up",
        "status after the return"
    );
    assert_eq!(serve.stop(), Some(0));
    let while_down: Vec<CycleRow> = cycle_rows(&a)
        .into_iter()
        .filter(|r| r.scheduled_at > cut_at + TimeDelta::seconds(1) && r.scheduled_at < restored_at)
        .collect();
    assert!(while_down.is_empty(), "rows while cut off: {while_down:?}");
    // Every row it wrote reached the table, those of before the cut too.
    let rows_in_file = a.rows().len() as i64;
    assert_eq!(db.count("SELECT count(*) FROM timing_rows"), rows_in_file);
}

#[test]
fn timing_rows_is_exactly_the_union_of_the_nodes_tsv_rows() {
    let Some(db) = TestDb::new() else { return };
    let schedules = r#"[
      {"id": "x", "task": "t", "cron": "* * * * * *", "modes": ["ok", "flaky"], "max_failures": 100},
      {"id": "y", "task": "t", "cron": "* * * * * *", "modes": ["flaky", "ok"], "max_failures": 100},
      {"id": "z", "task": "t", "cron": "*/2 * * * * *", "modes": ["ok"], "overlap": "parallel"}
    ]"#;
    let (a, b) = (node("a", schedules), node("b", schedules));
    // Failed rows too, whichever node wins an instant.
    a.write("fail", "");
    b.write("fail", "");
    let (serve_a, serve_b) = (start(&a, &db.url), start(&b, &db.url));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(serve_a.stop(), Some(0));
    assert_eq!(serve_b.stop(), Some(0));
    let mut from_files = BTreeSet::new();
    for (name, inst) in [("a", &a), ("b", &b)] {
        for row in inst.rows() {
            let mut key = vec![name.to_string()];
            key.extend(row);
            assert!(
                from_files.insert(key.clone()),
                "a row twice in a TSV: {key:?}"
            );
        }
    }
    let ms = |col: &str| {
        format!(
            "coalesce(to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), '')"
        )
    };
    let sql = format!(
        "SELECT node, {}, {}, {}, duration_ms::text, priority, schedule, cycle, mode,
                attempt::text, status, coalesce(exit_code::text, ''), coalesce(cost_usd::text, ''), note
         FROM timing_rows",
        ms("scheduled_at"),
        ms("started_at"),
        ms("finished_at")
    );
    let from_table: Vec<Vec<String>> = db
        .query(&sql)
        .iter()
        .map(|r| (0..14).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    let table_set: BTreeSet<Vec<String>> = from_table.iter().cloned().collect();
    assert_eq!(
        table_set.len(),
        from_table.len(),
        "a row twice in the table"
    );
    let missing: Vec<_> = from_files.difference(&table_set).collect();
    let extra: Vec<_> = table_set.difference(&from_files).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from the table: {missing:?}\nnot in any TSV: {extra:?}"
    );
    assert!(from_files.len() > 30, "{} rows", from_files.len());
    assert!(
        from_files.iter().any(|r| r[10] == "failed"),
        "failed rows are mirrored too"
    );
    // `report --cluster` reads the same rows: every node's, per schedule.
    let out = a
        .command(&["report", "--cluster", "--json", "--since", "1h"])
        .env("LOOP_ORCHESTRATOR_POSTGRES", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["rows_in_window"],
        from_files.len() as u64,
        "{report}"
    );
    for id in ["x", "y", "z"] {
        let cycles_in_files = from_files
            .iter()
            .filter(|r| r[6] == id && r[8] == "cycle")
            .count() as u64;
        let schedule = report["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["schedule"] == id)
            .unwrap_or_else(|| panic!("{id} not in {report}"));
        assert_eq!(schedule["cycles"], cycles_in_files, "{id}");
    }
    assert!(
        report["file"].as_str().unwrap().contains("timing_rows of"),
        "{report}"
    );
}

#[test]
fn two_nodes_starting_together_migrate_the_schema_once() {
    let Some(db) = TestDb::new() else { return };
    let schedules = every_second(&["s"], "ok", "");
    let (a, b) = (node("a", &schedules), node("b", &schedules));
    let env = env(&db.url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (serve_a, serve_b) = (Serve::spawn(&a, &env), Serve::spawn(&b, &env));
    serve_a.wait_serving();
    serve_b.wait_serving();
    assert_eq!(
        db.count("SELECT count(*) FROM schema_migrations"),
        db.count("SELECT count(DISTINCT version) FROM schema_migrations")
    );
    assert_eq!(db.count("SELECT count(*) FROM schema_migrations"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM nodes WHERE stopped_at IS NULL"),
        2
    );
    for inst in [&a, &b] {
        common::wait_until(Duration::from_secs(5), "the node reports itself up", || {
            status_json(inst)["service"]["cluster"]["state"] == "up"
        });
    }
    common::wait_until(
        Duration::from_secs(10),
        "an instant is claimed and run",
        || !cycle_rows(&a).is_empty() || !cycle_rows(&b).is_empty(),
    );
    let status_cluster = |json: bool| {
        let mut command = a.command(&["status", "--cluster"]);
        if json {
            command.arg("--json");
        }
        command.env("LOOP_ORCHESTRATOR_POSTGRES", &db.url);
        command.output().unwrap()
    };
    let out = status_cluster(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("live"))
            && shown
                .lines()
                .any(|l| l.starts_with("b ") && l.contains("live")),
        "{shown}"
    );
    assert_eq!(serve_a.stop(), Some(0));
    assert_eq!(serve_b.stop(), Some(0));
    let out = status_cluster(true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = report["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .all(|n| n["live"] == false && !n["stopped_at"].is_null())
    );
    let last_node = report["schedules"][0]["last"]["node"].as_str().unwrap();
    assert!(["a", "b"].contains(&last_node), "{report}");
}

#[test]
fn an_escalation_on_one_node_pauses_every_node_and_resume_on_another_lifts_it() {
    let Some(db) = TestDb::new() else { return };
    let schedules = every_second(&["f"], "flaky", ", \"max_failures\": 2");
    let (a, b) = (node("a", &schedules), node("b", &schedules));
    a.write("fail", "");
    b.write("fail", "");
    let (serve_a, serve_b) = (start(&a, &db.url), start(&b, &db.url));
    let escalated_row = |inst: &Instance| {
        inst.rows()
            .into_iter()
            .find(|r| r[7] == "cycle" && r[9] == "escalated")
    };
    let mut escalated_by = None;
    common::wait_until(Duration::from_secs(20), "a node escalates", || {
        escalated_by = [("a", &a, &b), ("b", &b, &a)]
            .into_iter()
            .find(|(_, inst, _)| escalated_row(inst).is_some());
        escalated_by.is_some()
    });
    let (name, escalator, other) = escalated_by.unwrap();
    let escalated_at: DateTime<Utc> = escalated_row(escalator).unwrap()[1].parse().unwrap();
    // The other node learns it (its reads every third of a lease) and pauses too.
    common::wait_until(
        Duration::from_secs(10),
        "the other node shows it escalated",
        || status_json(other)["schedules"][0]["escalated"] == true,
    );
    let settled = Utc::now() + TimeDelta::seconds(1);
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<CycleRow> = cycle_rows(&a)
        .into_iter()
        .chain(cycle_rows(&b))
        .filter(|r| r.scheduled_at > settled)
        .collect();
    assert!(
        after.is_empty(),
        "fires after node {name} escalated at {escalated_at}: {after:?}"
    );
    // `resume` on the node that did not escalate lifts it everywhere.
    std::fs::remove_file(a.path().join("fail")).unwrap();
    std::fs::remove_file(b.path().join("fail")).unwrap();
    let env = env(&db.url);
    let mut resume = other.command(&["resume", "f"]);
    resume.env(env[0].0, &env[0].1);
    let out = resume.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every node"),
        "{}",
        text(&out)
    );
    let resumed_at = Utc::now();
    common::wait_until(
        Duration::from_secs(10),
        "the escalating node resumes too",
        || status_json(escalator)["schedules"][0]["escalated"] == false,
    );
    common::wait_until(Duration::from_secs(15), "both nodes fire again", || {
        let fired = |inst: &Instance| {
            cycle_rows(inst)
                .iter()
                .any(|r| r.scheduled_at > resumed_at && r.status == "ok")
        };
        fired(&a) && fired(&b)
    });
    assert_eq!(db.count("SELECT count(*) FROM escalations"), 0);
    assert_eq!(serve_a.stop(), Some(0));
    assert_eq!(serve_b.stop(), Some(0));
}

#[test]
fn a_second_live_node_with_the_same_name_is_refused_at_start() {
    let Some(db) = TestDb::new() else { return };
    let schedules = every_second(&["s"], "ok", "");
    let (first, second) = (node("same", &schedules), node("same", &schedules));
    let serve = start(&first, &db.url);
    let out = second
        .command(&["serve"])
        .env("LOOP_ORCHESTRATOR_POSTGRES", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node name \"same\" is taken by a live node of another instance"),
        "{stderr}"
    );
    assert!(cycle_rows(&second).is_empty());
    assert_eq!(serve.stop(), Some(0));
    // Stopped, the name is free again.
    let again = start(&second, &db.url);
    assert_eq!(again.stop(), Some(0));
}

#[test]
fn a_budget_spent_on_any_node_and_a_pause_set_by_any_node_hold_the_schedule_on_every_node() {
    let Some(db) = TestDb::new() else { return };
    let schedules = r#"[
      {"id": "budgeted", "task": "t", "cron": "* * * * * *", "modes": ["ok"], "max_cost_usd_per_day": 1},
      {"id": "paused", "task": "t", "cron": "* * * * * *", "modes": ["ok"]},
      {"id": "free", "task": "t", "cron": "* * * * * *", "modes": ["ok"]}
    ]"#;
    let (a, b) = (node("a", schedules), node("b", schedules));
    let (serve_a, serve_b) = (start(&a, &db.url), start(&b, &db.url));
    common::wait_until(Duration::from_secs(10), "both schedules run", || {
        let rows: Vec<CycleRow> = cycle_rows(&a).into_iter().chain(cycle_rows(&b)).collect();
        ["budgeted", "paused"]
            .iter()
            .all(|id| rows.iter().any(|r| r.schedule == *id && r.status == "ok"))
    });
    // A third node (not running here) spent $1.50 on "budgeted" today and was rate limited
    // on "paused" for a minute: what its rows and its pause put in the tables.
    db.query(
        "INSERT INTO timing_rows (node, scheduled_at, started_at, finished_at, duration_ms,
             priority, schedule, cycle, mode, attempt, status, exit_code, cost_usd, note)
         VALUES ('c', now(), now(), now(), 0, 'schedule', 'budgeted', 'c-1', 'agent', 1,
             'ok', 0, 1.5, '')",
    );
    db.query(
        "INSERT INTO pauses (schedule, until, reason, node)
         VALUES ('paused', now() + interval '1 minute', 'rate limited', 'c')",
    );
    let set_at = Utc::now() + TimeDelta::seconds(1);
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<CycleRow> = cycle_rows(&a)
        .into_iter()
        .chain(cycle_rows(&b))
        .filter(|r| r.scheduled_at > set_at)
        .collect();
    for (id, reason) in [
        ("budgeted", "budget spent until"),
        ("paused", "rate limited until"),
    ] {
        let rows: Vec<&CycleRow> = after.iter().filter(|r| r.schedule == id).collect();
        assert!(rows.len() >= 2, "{id}: {rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.status == "skipped" && r.note.contains(reason)),
            "{id} ran after it was held: {rows:?}"
        );
    }
    assert!(
        after
            .iter()
            .any(|r| r.schedule == "free" && r.status == "ok"),
        "the free schedule goes on"
    );
    assert_eq!(serve_a.stop(), Some(0));
    assert_eq!(serve_b.stop(), Some(0));
}

/// Needs no database: the URL names a port nothing listens on.
#[test]
fn a_node_without_its_database_fires_nothing_and_never_shows_the_password() {
    let a = node("lonely", &every_second(&["tick"], "ok", ""));
    let url = "postgres://loop:hunter2-secret@127.0.0.1:9/loop";
    let serve = start(&a, url);
    std::thread::sleep(Duration::from_secs(4));
    let status = a.run(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains("DATABASE UNREACHABLE since"), "{shown}");
    let mut cluster = a.command(&["status", "--cluster"]);
    cluster.env("LOOP_ORCHESTRATOR_POSTGRES", url);
    let cluster = cluster.output().unwrap();
    assert_eq!(cluster.status.code(), Some(1), "{}", text(&cluster));
    assert_eq!(serve.stop(), Some(0));
    assert!(cycle_rows(&a).is_empty(), "fired alone: {:?}", a.rows());
    for out in [
        serve_log(&a),
        shown,
        text(&cluster),
        a.read(".loop-orchestrator/service.json"),
    ] {
        assert!(!out.contains("hunter2"), "the password shown: {out}");
        assert!(
            out.contains("loop:***@127.0.0.1:9"),
            "the URL not shown: {out}"
        );
    }
}

fn serve_log(inst: &Instance) -> String {
    inst.read("serve.log")
}

/// Needs no database: the variable is only set, never used.
#[test]
fn a_mode_never_sees_the_cluster_database_url() {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write(
        "schedules.json",
        r#"{"version": 1, "schedules": [{"id": "s", "task": "t", "modes": ["env"]}]}"#,
    );
    inst.mode(
        "env",
        r#"["sh", "-c", "env > \"$LOOP_DIR/env.txt\""]"#,
        "prompt = \"none\"",
    );
    let out = inst
        .command(&["run-cycle"])
        .env(
            "LOOP_ORCHESTRATOR_POSTGRES",
            "postgres://loop:hunter2@db/loop",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let seen = inst.read("env.txt");
    assert!(seen.contains("LOOP_SCHEDULE_ID=s"), "{seen}");
    assert!(!seen.contains("LOOP_ORCHESTRATOR_POSTGRES"), "{seen}");
    assert!(!seen.contains("hunter2"), "{seen}");
}
