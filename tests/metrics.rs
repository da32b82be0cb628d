//! `serve --metrics`: the real binary, a real HTTP client, real Prometheus text parsers
//! (the `prometheus-parse` crate always; Python's `prometheus_client`, whose OpenMetrics
//! parser is strict, when it is installed).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Instance, NotifyListener, have, skip, text};

/// A running `serve --metrics`, killed if the test ends early.
struct Serve {
    child: Option<Child>,
    /// The address the metrics server listens on, read from its log.
    addr: SocketAddr,
}

impl Serve {
    /// Starts `serve` with `args` and waits until it serves; `aside` holds its log.
    fn start(inst: &Instance, aside: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let log = aside.join("serve.log");
        let mut all = vec!["--log-format", "json", "serve"];
        all.extend_from_slice(args);
        let mut command = inst.command(&all);
        command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = events(&text)
                .into_iter()
                .find(|e| {
                    e["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("metrics: serving"))
                })
                .and_then(|e| e["fields"]["address"].as_str()?.parse().ok());
            if let (Some(addr), true) = (addr, text.contains("\"serving\"")) {
                return Serve {
                    child: Some(child),
                    addr,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited with {status} before serving:\n{text}");
            }
            assert!(Instant::now() < deadline, "serve did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn get(&self, path: &str) -> Reply {
        get(self.addr, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// SIGTERM; the exit code.
    fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.take().unwrap().wait().unwrap().code()
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

fn events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Result<Reply, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut request = agent.get(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok(Reply {
        status: response.status().as_u16(),
        content_type,
        body: response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?,
    })
}

fn instance(schedules: &str, extra: &str) -> Instance {
    let inst = Instance {
        dir: tempfile::tempdir().unwrap(),
    };
    inst.write(
        "schedules.json",
        &format!("{{\n  \"version\": 1,\n{extra}  \"schedules\": {schedules}\n}}\n"),
    );
    inst.mode("pass", "[\"true\"]", "prompt = \"none\"");
    inst.mode("fail", "[\"false\"]", "prompt = \"none\"");
    inst.mode("nap", "[\"sleep\", \"1.5\"]", "prompt = \"none\"");
    inst
}

/// Samples of one scrape, as the `prometheus-parse` crate reads the 0.0.4 text: name,
/// labels (sorted), value; a histogram's samples are its `_count` and `_sum`.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse_text(body: &str) -> Samples {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the scrape parses");
    let mut samples = Samples::new();
    for sample in scrape.samples {
        let labels: BTreeMap<String, String> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                samples.insert((sample.metric, labels), v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                let count = buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0.0, |b| b.count);
                samples.insert((format!("{}_count", sample.metric), labels), count);
            }
            prometheus_parse::Value::Summary(_) => panic!("no summaries are exposed"),
        }
    }
    samples
}

/// `(name, label value)` pairs → sample.
fn key(name: &str, labels: &[(&str, &str)]) -> (String, BTreeMap<String, String>) {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Every sample of `name`, by labels.
fn family(samples: &Samples, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, labels), v)| (labels.clone(), *v))
        .collect()
}

/// One sample as Python reads it: name, labels, value.
type PySample = (String, BTreeMap<String, String>, f64);

/// The samples Python's `prometheus_client` parses from `body` (its OpenMetrics parser when
/// `openmetrics`, its text parser otherwise), as `(name, labels, value)`; `None` when the
/// module is not installed.
fn python_samples(body: &str, openmetrics: bool) -> Option<Vec<PySample>> {
    const SCRIPT: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families as text
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
except ImportError:
    sys.exit(3)
parse = om if sys.argv[1] == "om" else text
print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))
"#;
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT, if openmetrics { "om" } else { "text" }])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            skip(&format!(
                "python3 cannot run ({e}); the strict parser check needs it"
            ));
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        skip("Python's prometheus_client is not installed (pip install prometheus-client)");
        return None;
    }
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<PySample> = serde_json::from_slice(&out.stdout).unwrap();
    Some(parsed)
}

#[test]
fn scraped_counters_equal_the_rows_of_the_tsv_after_the_service_drains() {
    let inst = instance(
        r#"[
    { "id": "good", "task": "t", "cron": "* * * * * *", "modes": ["pass"] },
    { "id": "bad", "task": "t", "cron": "* * * * * *", "modes": ["fail"], "max_failures": 2 },
    { "id": "slow", "task": "t", "cron": "* * * * * *", "modes": ["nap", "pass"] }
  ]"#,
        "  \"max_concurrent_cycles\": 3,\n",
    );
    let aside = tempfile::tempdir().unwrap();
    let serve = Serve::start(&inst, aside.path(), &["--metrics", "127.0.0.1:0"], &[]);
    assert_eq!(serve.get("/readyz").status, 200);
    common::wait_until(
        Duration::from_secs(20),
        "bad escalates and slow skips",
        || {
            let samples = parse_text(&serve.get("/metrics").body);
            samples.get(&key("loop_orchestrator_escalated", &[("schedule", "bad")])) == Some(&1.0)
                && samples
                    .get(&key(
                        "loop_orchestrator_cycles_total",
                        &[("schedule", "slow"), ("status", "skipped")],
                    ))
                    .is_some_and(|n| *n >= 1.0)
        },
    );
    let samples = parse_text(&serve.get("/metrics").body);
    assert!(
        !samples.contains_key(&key(
            "loop_orchestrator_next_fire_timestamp_seconds",
            &[("schedule", "bad")]
        )),
        "an escalated schedule has no next fire"
    );
    let next_good = samples[&key(
        "loop_orchestrator_next_fire_timestamp_seconds",
        &[("schedule", "good")],
    )];
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1e3;
    assert!(
        (now - 1.0..=now + 2.0).contains(&next_good),
        "next fire of an every-second schedule {next_good} vs now {now}"
    );
    assert_eq!(
        samples[&key(
            "loop_orchestrator_schedule_interval_seconds",
            &[("schedule", "good")]
        )],
        1.0
    );

    // Drain: disable every schedule, wait for the running cycles to end.
    let disabled = inst
        .read("schedules.json")
        .replace("\"task\": \"t\",", "\"task\": \"t\", \"enabled\": false,");
    inst.write("schedules.json.new", &disabled);
    std::fs::rename(
        inst.path().join("schedules.json.new"),
        inst.path().join("schedules.json"),
    )
    .unwrap();
    common::wait_until(Duration::from_secs(20), "the service drains", || {
        let samples = parse_text(&serve.get("/metrics").body);
        let get = |name: &str| samples.get(&key(name, &[])).copied();
        samples.get(&key("loop_orchestrator_reloads_total", &[("result", "ok")])) == Some(&1.0)
            && get("loop_orchestrator_running_cycles") == Some(0.0)
            && get("loop_orchestrator_waiting_fires") == Some(0.0)
    });
    // Rows of fires that never started are written without waiting: the file and the
    // scrape are compared once two looks at the file agree around a scrape.
    let (rows, scrape) = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = inst.rows();
            let body = serve.get("/metrics").body;
            let after = inst.rows();
            if before == after {
                break (after, body);
            }
            assert!(Instant::now() < deadline, "the file keeps changing");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let samples = parse_text(&scrape);

    let mut cycles: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    let mut mode_runs: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    let mut fires: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    let mut per_mode: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    for row in &rows {
        let (schedule, mode, status) = (&row[5], &row[7], &row[9]);
        let labels = |pairs: &[(&str, &str)]| key("", pairs).1;
        if mode == "cycle" {
            *cycles
                .entry(labels(&[("schedule", schedule), ("status", status)]))
                .or_default() += 1.0;
            if !row[0].is_empty() {
                *fires.entry(labels(&[("schedule", schedule)])).or_default() += 1.0;
            }
        } else {
            *mode_runs
                .entry(labels(&[
                    ("schedule", schedule),
                    ("mode", mode),
                    ("status", status),
                ]))
                .or_default() += 1.0;
            *per_mode.entry(labels(&[("mode", mode)])).or_default() += 1.0;
        }
    }
    assert!(
        cycles.len() >= 4,
        "ok, failed, escalated and skipped rows: {cycles:?}"
    );
    assert_eq!(family(&samples, "loop_orchestrator_cycles_total"), cycles);
    assert_eq!(
        family(&samples, "loop_orchestrator_mode_runs_total"),
        mode_runs
    );
    assert_eq!(family(&samples, "loop_orchestrator_fires_total"), fires);
    assert_eq!(
        family(&samples, "loop_orchestrator_mode_duration_seconds_count"),
        per_mode
    );
    assert_eq!(
        samples[&key("loop_orchestrator_fire_lateness_seconds_count", &[])],
        fires.values().sum::<f64>()
    );
    let memory_lines = inst.read("persistent-memory.md").lines().count() as f64;
    assert_eq!(
        samples[&key("loop_orchestrator_memory_lines", &[])],
        memory_lines
    );
    assert_eq!(
        family(&samples, "loop_orchestrator_build_info"),
        BTreeMap::from([(key("", &[("version", env!("CARGO_PKG_VERSION"))]).1, 1.0)])
    );

    // The same exposition through a second, strict parser, in both formats.
    if let Some(python) = python_samples(&scrape, false) {
        let from_python: BTreeMap<_, _> = python
            .into_iter()
            .filter(|(name, _, _)| name == "loop_orchestrator_cycles_total")
            .map(|(_, labels, value)| (labels, value))
            .collect();
        assert_eq!(from_python, cycles);
    }
    let open = get(
        serve.addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"),
    )
    .unwrap();
    assert_eq!(
        open.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(open.body.ends_with("# EOF\n"));
    if let Some(python) = python_samples(&open.body, true) {
        let from_python: BTreeMap<_, _> = python
            .into_iter()
            .filter(|(name, _, _)| name == "loop_orchestrator_mode_runs_total")
            .map(|(_, labels, value)| (labels, value))
            .collect();
        assert_eq!(from_python, mode_runs);
    }
    let plain = serve.get("/metrics");
    assert_eq!(
        plain.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );

    // The page at `/`: the report of the last 24 hours, with every schedule of the file.
    let page = serve.get("/");
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"), "{page:?}");
    assert!(page.body.contains("<svg"), "the report's charts");
    for schedule in ["good", "bad", "slow"] {
        assert!(
            page.body
                .contains(&format!("<title>{schedule}</title>{schedule}")),
            "{schedule} has a lane on the page's timeline"
        );
    }
    assert_eq!(serve.get("/nothing-here").status, 404);
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn healthz_turns_503_while_the_loop_is_stalled_and_200_after() {
    let inst = instance(
        r#"[{ "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["pass"] }]"#,
        "",
    );
    let aside = tempfile::tempdir().unwrap();
    let stall = aside.path().join("stall");
    let serve = Serve::start(
        &inst,
        aside.path(),
        &["--metrics", "127.0.0.1:0"],
        &[("LOOP_ORCHESTRATOR_TEST_STALL_FILE", stall.to_str().unwrap())],
    );
    let health = serve.get("/healthz");
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "ok: the scheduler loop is alive\n")
    );
    std::fs::write(&stall, "").unwrap();
    let stalled_at = Instant::now();
    let mut last = None;
    common::wait_until(Duration::from_secs(20), "/healthz says 503", || {
        let reply = serve.get("/healthz");
        let done = reply.status == 503;
        last = Some(reply);
        done
    });
    let waited = stalled_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "503 only past the grace: after {waited:?}"
    );
    let body = last.unwrap().body;
    assert!(body.contains("the scheduler loop is overdue"), "{body}");
    // Only the loop's thread stopped: the metrics are still served.
    let scrape = serve.get("/metrics");
    assert_eq!(scrape.status, 200);
    assert!(scrape.body.contains("loop_orchestrator_fires_total"));
    let rows_while_stalled = inst.rows().len();

    std::fs::remove_file(&stall).unwrap();
    common::wait_until(Duration::from_secs(10), "/healthz says 200 again", || {
        serve.get("/healthz").status == 200
    });
    common::wait_until(Duration::from_secs(10), "the stalled instants fire", || {
        inst.rows().len() > rows_while_stalled
    });
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn a_metrics_address_in_use_is_exit_2_naming_it_before_ready() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for from_file in [false, true] {
        let extra = if from_file {
            format!("  \"metrics\": \"{addr}\",\n")
        } else {
            String::new()
        };
        let inst = instance(
            r#"[{ "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["pass"] }]"#,
            &extra,
        );
        let sockets = tempfile::tempdir().unwrap();
        let notify = NotifyListener::bind_in(sockets.path()).unwrap();
        let args: &[&str] = if from_file {
            &["serve"]
        } else {
            &["serve", "--metrics", &addr]
        };
        let out = inst
            .command(args)
            .env("NOTIFY_SOCKET", notify.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("metrics address {addr}: ")) && stderr.contains("in use"),
            "{stderr}"
        );
        assert_eq!(
            notify.recv_timeout(Duration::from_millis(100)),
            None,
            "nothing sent before exit"
        );
        assert!(inst.rows().is_empty(), "nothing fired");
    }
}

#[test]
fn a_remote_metrics_address_needs_the_flag() {
    let inst = instance(
        r#"[{ "id": "hourly", "task": "t", "cron": "@hourly", "modes": ["pass"] }]"#,
        "",
    );
    let out = inst.run(&["serve", "--metrics", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-allow-remote"),
        "{}",
        text(&out)
    );
    let aside = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        &inst,
        aside.path(),
        &["--metrics", "0.0.0.0:0", "--metrics-allow-remote"],
        &[],
    );
    assert!(serve.addr.ip().is_unspecified());
    let local = SocketAddr::from(([127, 0, 0, 1], serve.addr.port()));
    assert_eq!(get(local, "/readyz", None).unwrap().status, 200);
    assert_eq!(serve.stop(), Some(0));
}

/// Descriptors open in process `pid`.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's descriptor limit toward `wanted`; the limit reached.
fn raise_fd_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let target = wanted.min(hard).max(soft);
    let _ = setrlimit(Resource::RLIMIT_NOFILE, target, hard);
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

#[test]
fn garbage_and_ten_thousand_idle_connections_do_not_disturb_the_fires() {
    const CONNECTIONS: usize = 10_000;
    let inst = instance(
        r#"[{ "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["pass"] }]"#,
        "",
    );
    let aside = tempfile::tempdir().unwrap();
    let serve = Serve::start(&inst, aside.path(), &["--metrics", "127.0.0.1:0"], &[]);
    let addr = serve.addr;
    let baseline_fds = open_fds(serve.pid());
    let window_start = chrono::Utc::now();

    // Garbage: hyper answers 400 and closes.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")
        .unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = garbage.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // A flood of connections that send nothing, or half a request, and stay open.
    let limit = raise_fd_limit(CONNECTIONS as u64 + 512);
    let wanted = CONNECTIONS.min(limit.saturating_sub(512) as usize);
    if wanted < CONNECTIONS {
        eprintln!(
            "note: descriptor limit {limit}: opening {wanted} connections, not {CONNECTIONS}"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let held = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..wanted {
            tasks.spawn(async move {
                let connect = tokio::net::TcpStream::connect(addr);
                let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
                    .await
                    .ok()?
                    .ok()?;
                if i % 2 == 0 {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream
                        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                        .await;
                }
                Some(stream)
            });
        }
        let mut held = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(stream)) = done {
                held.push(stream);
            }
        }
        held
    });
    eprintln!("{} of {wanted} connections opened", held.len());
    let during_flood = open_fds(serve.pid());
    assert!(
        during_flood < baseline_fds + 200,
        "the service holds {during_flood} descriptors during the flood (baseline {baseline_fds})"
    );
    // The idle ones are closed after the header timeout; a scrape gets through meanwhile.
    common::wait_until(
        Duration::from_secs(15),
        "a scrape succeeds during the flood",
        || get(addr, "/metrics", None).is_ok_and(|r| r.status == 200),
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        open_fds(serve.pid()) < baseline_fds + 20,
        "idle connections are closed after the header timeout"
    );
    drop(held);
    drop(runtime);
    std::thread::sleep(Duration::from_secs(2));
    let window_end = chrono::Utc::now();
    assert_eq!(serve.stop(), Some(0));

    // Every whole second of the window fired once, on time.
    let instants: Vec<(chrono::DateTime<chrono::Utc>, i64)> = inst
        .rows()
        .into_iter()
        .filter(|r| r[7] == "cycle" && !r[0].is_empty())
        .map(|r| {
            let scheduled: chrono::DateTime<chrono::Utc> = r[0].parse().unwrap();
            let started: chrono::DateTime<chrono::Utc> = r[1].parse().unwrap();
            (scheduled, (started - scheduled).num_milliseconds())
        })
        .collect();
    let first = window_start.timestamp() + 1;
    let last = window_end.timestamp() - 1;
    assert!(last - first >= 8, "the window covers the flood");
    for second in first..=last {
        let fired: Vec<i64> = instants
            .iter()
            .filter(|(at, _)| at.timestamp() == second)
            .map(|(_, late)| *late)
            .collect();
        assert_eq!(fired.len(), 1, "second {second}: fired {fired:?}");
        assert!(fired[0] < 1_000, "second {second}: {} ms late", fired[0]);
    }
}

/// A fenced block of README.md that starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find(&format!("```yaml\n{first_line}\n"))
        .unwrap_or_else(|| panic!("README.md has no yaml block starting {first_line:?}"));
    let body = &readme[start + "```yaml\n".len()..];
    body[..body.find("```").unwrap()].to_string()
}

fn promtool() -> bool {
    have("promtool") || !skip("promtool is not installed (apt-get install prometheus)")
}

#[test]
fn the_readme_scrape_job_and_alert_rules_check_and_fire_as_documented() {
    if !promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yml"), readme_block("groups:")).unwrap();
    let config = format!(
        "{}rule_files: [rules.yml]\n",
        readme_block("scrape_configs:")
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // Synthetic series, one minute apart from time 0 (promtool's clock).
    let tests = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'loop_orchestrator_escalated{instance="a",schedule="nightly"}'
        values: '0 0 1x20'
      - series: 'loop_orchestrator_escalated{instance="a",schedule="main"}'
        values: '0x20'
      # "main" last succeeded at time 0 and fires every 2 minutes: alert past 4 minutes.
      - series: 'loop_orchestrator_last_cycle_timestamp_seconds{instance="a",schedule="main",status="ok"}'
        values: '0x20'
      - series: 'loop_orchestrator_schedule_interval_seconds{instance="a",schedule="main"}'
        values: '120x20'
      # "hourly" succeeded at 10 minutes; its interval is an hour: no alert.
      - series: 'loop_orchestrator_last_cycle_timestamp_seconds{instance="a",schedule="hourly",status="ok"}'
        values: '600x20'
      - series: 'loop_orchestrator_schedule_interval_seconds{instance="a",schedule="hourly"}'
        values: '3600x20'
      # Ten fires a minute, half of them between 1 s and 2.5 s late.
      - series: 'loop_orchestrator_fire_lateness_seconds_bucket{instance="a",le="1"}'
        values: '0+5x20'
      - series: 'loop_orchestrator_fire_lateness_seconds_bucket{instance="a",le="2.5"}'
        values: '0+10x20'
      - series: 'loop_orchestrator_fire_lateness_seconds_bucket{instance="a",le="+Inf"}'
        values: '0+10x20'
    alert_rule_test:
      - eval_time: 1m
        alertname: LoopScheduleEscalated
        exp_alerts: []
      - eval_time: 3m
        alertname: LoopScheduleEscalated
        exp_alerts:
          - exp_labels: {instance: a, schedule: nightly}
            exp_annotations:
              summary: "nightly escalated: paused until its entry changes or `loop-orchestrator resume nightly`"
      - eval_time: 4m
        alertname: LoopNoSuccessfulCycle
        exp_alerts: []
      - eval_time: 5m
        alertname: LoopNoSuccessfulCycle
        exp_alerts:
          - exp_labels: {instance: a, schedule: main}
            exp_annotations:
              summary: "main: no successful cycle in twice its interval"
      - eval_time: 3m
        alertname: LoopFireLateness
        exp_alerts: []
      - eval_time: 10m
        alertname: LoopFireLateness
        exp_alerts:
          - exp_labels: {instance: a}
            exp_annotations:
              summary: "fires start more than 1 s after their instant (p99 over 15 min)"
"#;
    std::fs::write(dir.path().join("tests.yml"), tests).unwrap();
    let run = Command::new("promtool")
        .args(["test", "rules", "tests.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
}

/// A loopback port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_real_prometheus_scrapes_the_service() {
    if !promtool() {
        return;
    }
    let inst = instance(
        r#"[{ "id": "tick", "task": "t", "cron": "* * * * * *", "modes": ["pass"] }]"#,
        "",
    );
    let aside = tempfile::tempdir().unwrap();
    let serve = Serve::start(&inst, aside.path(), &["--metrics", "127.0.0.1:0"], &[]);
    // The metrics as promtool's linter reads them (names, units, help, types).
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_until(Duration::from_secs(10), "a cycle is counted", || {
        serve
            .get("/metrics")
            .body
            .contains("loop_orchestrator_cycles_total{")
    });
    lint.stdin
        .take()
        .unwrap()
        .write_all(serve.get("/metrics").body.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty(),
        "{}",
        text(&lint)
    );

    let port = free_port();
    let config = format!(
        "scrape_configs:\n  - job_name: loop-orchestrator\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{}\"]\n",
        serve.addr
    );
    std::fs::write(aside.path().join("prometheus.yml"), config).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            aside.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            aside.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(aside.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let query = |q: &str| -> Option<serde_json::Value> {
        let reply = get(api, &format!("/api/v1/query?query={q}"), None).ok()?;
        serde_json::from_str(&reply.body).ok()
    };
    let mut targets = serde_json::Value::Null;
    let scraped = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(up) = query("up")
                && up["data"]["result"][0]["value"][1] == "1"
            {
                return true;
            }
            if let Ok(reply) = get(api, "/api/v1/targets", None) {
                targets = serde_json::from_str(&reply.body).unwrap_or_default();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })();
    let build = query("loop_orchestrator_build_info");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let log = std::fs::read_to_string(aside.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        scraped,
        "Prometheus never scraped the service: {targets}\n{log}"
    );
    let build = build.unwrap();
    assert_eq!(
        build["data"]["result"][0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{build}"
    );
    assert_eq!(serve.stop(), Some(0));
}

#[test]
fn readyz_turns_503_when_the_stop_begins_and_healthz_stays_200_through_the_grace() {
    let inst = instance(
        r#"[{ "id": "long", "task": "t", "cron": "* * * * * *", "modes": ["long"] }]"#,
        "  \"shutdown_grace\": \"30s\",\n",
    );
    inst.mode("long", "[\"sleep\", \"9\"]", "prompt = \"none\"");
    let aside = tempfile::tempdir().unwrap();
    let serve = Serve::start(&inst, aside.path(), &["--metrics", "127.0.0.1:0"], &[]);
    assert_eq!(serve.get("/readyz").status, 200);
    common::wait_until(Duration::from_secs(10), "a cycle runs", || {
        serve
            .get("/metrics")
            .body
            .contains("loop_orchestrator_running_cycles 1")
    });
    let pid = nix::unistd::Pid::from_raw(serve.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    common::wait_until(Duration::from_secs(5), "/readyz says 503", || {
        serve.get("/readyz").status == 503
    });
    // Past the 5 s a stalled timer is given, the service still waits for its mode.
    std::thread::sleep(Duration::from_secs(6));
    let health = serve.get("/healthz");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(serve.get("/readyz").status, 503);
    assert_eq!(serve.stop(), Some(0));
}
