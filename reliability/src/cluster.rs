//! `cluster`: three `serve` nodes on one PostgreSQL (SPEC §11) under faults, and a file-only
//! node beside them for the lateness comparison.
//!
//! The server is one of the harness's own (initdb in a temp dir, a port of its own, run as
//! the `postgres` user when the harness runs as root): stopping it mid-run must not stop
//! anyone else's database. Nodes: n1, n2, n3, each with its own instance directory and the
//! same schedules.json (N schedules, default 100, every second, one mode, half of them
//! `catch_up`), and in the lateness scenario `solo`, the same schedules without a cluster
//! section.
//!
//! Scenarios (`--scenario faults|db|lateness|all`, default all, each `--seconds` long,
//! default 120; the mode of faults and db `sleep 0.3`, of lateness `true`):
//! - **faults**: at a quarter of the run, as soon as n1 runs cycles (it holds claims), n1 is
//!   SIGKILLed with its modes (a power cut); at
//!   0.4 n2 is cut off the database for 20 s: n2 runs in a network namespace whose veth the
//!   harness takes down (packets dropped, nothing closed), or, where `ip netns` does not work,
//!   behind a TCP proxy the harness stops; at 0.75 n1 starts again.
//! - **db**: at 0.3 the server is stopped (`pg_ctl stop -m fast`) for 30 s, then started.
//! - **lateness**: no fault; `solo` runs the same schedules beside the cluster.
//!
//! Verdicts, from the four TSVs and the tables once every node stopped:
//! - no (schedule, instant, attempt) ran twice (two cycle rows that are not `interrupted`);
//! - every instant of the window has a cycle row, except those of the database outage;
//! - no cycle row for an instant while the database was down (no node fires alone), and
//!   every schedule fires again after it;
//! - `timing_rows` holds exactly the rows of the three TSVs, each once;
//! - the takeover of n1's claims came within a lease and a third of the kill.
//!
//! Reported beside them: instants run once, interrupted and not run again (no `catch_up`),
//! run again as attempt 2 (`catch_up`), and instants run by a node whose end never reached
//! the database before its lease ran out, so a survivor recorded them `interrupted` too
//! (and ran them again when `catch_up`): the at-least-once edge SPEC §11 accepts ("at most
//! one run per (schedule, instant, attempt)"). Lateness p50/p99/max of the cluster's first
//! attempts before the first fault, and next to the file-only node's in the same seconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use loop_orchestrator::timing::{Row, Status};
use nix::sys::signal::Signal;

use crate::util::{self, Report, Res};

pub struct Options {
    pub seconds: f64,
    pub schedules: usize,
    pub lease_s: u64,
    pub scenario: String,
}

const CUT: Duration = Duration::from_secs(20);
const DB_DOWN: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Instants this close to a node's start or the stop are not judged (the nodes start and
/// stop one after another).
const EDGE: i64 = 3;

pub fn run(options: Options) -> Res<bool> {
    let bin = util::orchestrator_bin()?;
    let mut ok = true;
    for scenario in match options.scenario.as_str() {
        "all" => vec!["faults", "db", "lateness"],
        "faults" => vec!["faults"],
        "db" => vec!["db"],
        "lateness" => vec!["lateness"],
        other => {
            return Err(format!(
                "unknown scenario {other:?} (faults, db, lateness, all)"
            ));
        }
    } {
        ok &= run_scenario(&bin, &options, scenario)?;
    }
    Ok(ok)
}

// ------------------------------------------------------------------ the server

/// A PostgreSQL server of the harness's own.
struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(listen: &[&str]) -> Res<Server> {
        let bin = pg_bin()?;
        let dir = util::instance_dir("cluster-pg")?;
        let data = dir.path().join("data");
        let as_postgres = nix::unistd::Uid::effective().is_root();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .map_err(|e| e.to_string())?
                .ok_or("running as root, but there is no postgres user to run the server")?;
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        let server = Server {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        };
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ],
        )?;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.conf"))
            .map_err(|e| e.to_string())?;
        writeln!(
            conf,
            "listen_addresses = '{}'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 60",
            listen.join(","),
            server.data.display()
        )
        .map_err(|e| e.to_string())?;
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("pg_hba.conf"))
            .map_err(|e| e.to_string())?;
        writeln!(hba, "host all all 10.231.0.0/16 trust").map_err(|e| e.to_string())?;
        server.up()?;
        server.psql("postgres", "CREATE DATABASE loop")?;
        Ok(server)
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Res<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn up(&self) -> Res<()> {
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        self.pg("pg_ctl", &["-D", &data, "-l", &log, "-w", "start"])
    }

    fn down(&self) -> Res<()> {
        let data = self.data.display().to_string();
        self.pg("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
    }

    fn url(&self, host: &str, port: u16) -> String {
        format!("postgres://postgres@{host}:{port}/loop?sslmode=disable")
    }

    /// Runs SQL with psql; returns its unaligned output.
    fn psql(&self, db: &str, sql: &str) -> Res<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or `$REL_PG_BIN`.
fn pg_bin() -> Res<PathBuf> {
    if let Some(dir) = std::env::var_os("REL_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no PostgreSQL server binaries (set REL_PG_BIN): {e}"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql (set REL_PG_BIN)".into())
}

// ------------------------------------------------------------------ the cut

/// How n2 is cut off the database.
enum Cut {
    /// n2 runs in a network namespace; the host end of its veth goes down.
    Netns { ns: String, host_veth: String },
    /// n2 connects through this proxy, which stops.
    Proxy(Proxy),
}

/// The veth pair's subnet, 10.231.<n>.0/24, a third octet of each run's own (a namespace
/// left by a harness that was killed must not capture the route).
fn subnet() -> u32 {
    20 + std::process::id() % 200
}

fn host_ip() -> String {
    format!("10.231.{}.1", subnet())
}

fn node_ip() -> String {
    format!("10.231.{}.2", subnet())
}

fn ip(args: &[&str]) -> Res<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Cut {
    fn netns() -> Res<Cut> {
        let tag = std::process::id() % 100_000;
        let ns = format!("lorel{tag}");
        let host_veth = format!("lorel{tag}h");
        let node_veth = format!("lorel{tag}n");
        ip(&["netns", "add", &ns])?;
        let cut = Cut::Netns {
            ns: ns.clone(),
            host_veth: host_veth.clone(),
        };
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &node_veth,
        ])?;
        ip(&["link", "set", &node_veth, "netns", &ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", host_ip()),
            "dev",
            &host_veth,
        ])?;
        ip(&["link", "set", &host_veth, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&[
            "addr",
            "add",
            &format!("{}/24", node_ip()),
            "dev",
            &node_veth,
        ])?;
        in_ns(&["link", "set", &node_veth, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        Ok(cut)
    }

    fn describe(&self) -> String {
        match self {
            Cut::Netns { host_veth, .. } => {
                format!("network namespace, veth {host_veth} taken down (packets dropped)")
            }
            Cut::Proxy(_) => "TCP proxy stopped (connections closed)".into(),
        }
    }

    fn command(&self, bin: &Path, dir: &Path, args: &[&str]) -> Command {
        match self {
            Cut::Netns { ns, .. } => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", ns])
                    .arg(bin)
                    .arg("--dir")
                    .arg(dir)
                    .args(args)
                    .env_remove("LOOP_ORCHESTRATOR_DIR")
                    .env_remove("RUST_LOG")
                    .env_remove("NOTIFY_SOCKET")
                    .stdin(Stdio::null());
                command
            }
            Cut::Proxy(_) => util::orchestrator(bin, dir, args),
        }
    }

    fn set(&self, connected: bool) -> Res<()> {
        match self {
            Cut::Netns { host_veth, .. } => ip(&[
                "link",
                "set",
                host_veth,
                if connected { "up" } else { "down" },
            ]),
            Cut::Proxy(proxy) => {
                if connected {
                    proxy.restore()
                } else {
                    proxy.cut();
                    Ok(())
                }
            }
        }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Cut::Netns { ns, host_veth } = self {
            let _ = ip(&["link", "del", host_veth]);
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A TCP proxy on threads: `cut` closes every connection and the listener, `restore`
/// listens again on the same port.
struct Proxy {
    port: u16,
    upstream: String,
    live: Arc<Mutex<Vec<TcpStream>>>,
    open: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: String) -> Res<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let proxy = Proxy {
            port: listener.local_addr().map_err(|e| e.to_string())?.port(),
            upstream,
            live: Arc::new(Mutex::new(Vec::new())),
            open: Arc::new(AtomicBool::new(true)),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, live, open) = (self.upstream.clone(), self.live.clone(), self.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !open.load(Ordering::SeqCst) {
                    return; // the listener drops: the port is free again
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut all = live.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                all.push(client);
                all.push(server);
            }
        });
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        // Wakes the accept loop so it sees `open` and drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) -> Res<()> {
        self.open.store(true, Ordering::SeqCst);
        for _ in 0..250 {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", self.port)) {
                self.serve(listener);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("cannot listen on port {} again", self.port))
    }
}

// ------------------------------------------------------------------ the nodes

fn schedules_json(schedules: usize, cluster: Option<(&str, u64)>) -> String {
    let list: Vec<serde_json::Value> = (0..schedules)
        .map(|i| {
            serde_json::json!({
                "id": format!("s{i:03}"),
                "task": "cluster harness",
                "cron": "* * * * * *",
                "modes": ["work"],
                "catch_up": i % 2 == 0,
            })
        })
        .collect();
    let mut file = serde_json::json!({
        "version": 1,
        "timezone": "UTC",
        "max_concurrent_cycles": 64,
        "shutdown_grace": "10s",
        "schedules": list,
    });
    if let Some((node, lease)) = cluster {
        file["cluster"] = serde_json::json!({"node": node, "lease": format!("{lease}s")});
    }
    serde_json::to_string_pretty(&file).unwrap()
}

struct Node {
    name: &'static str,
    /// Taken by [`finish_dir`](util::finish_dir) at the end.
    dir: Option<tempfile::TempDir>,
    url: Option<String>,
    child: Option<Child>,
}

impl Node {
    fn new(
        name: &'static str,
        schedules: usize,
        cluster: Option<(String, u64)>,
        work: &[&str],
    ) -> Res<Node> {
        let dir = util::instance_dir(&format!("cluster-{name}"))?;
        util::write(
            &dir.path().join("schedules.json"),
            &schedules_json(schedules, cluster.as_ref().map(|(_, lease)| (name, *lease))),
        )?;
        util::write_mode(dir.path(), "work", work, "")?;
        Ok(Node {
            name,
            dir: Some(dir),
            url: cluster.map(|c| c.0),
            child: None,
        })
    }

    fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the instance is kept until the end")
            .path()
    }

    fn start(&mut self, bin: &Path, cut: Option<&Cut>) -> Res<()> {
        let args = ["--log-format", "json", "serve"];
        let mut command = match cut {
            Some(cut) => cut.command(bin, self.path(), &args),
            None => util::orchestrator(bin, self.path(), &args),
        };
        if let Some(url) = &self.url {
            command.env("LOOP_ORCHESTRATOR_POSTGRES", url);
        }
        let log = self.path().join("serve.log");
        self.child = Some(util::spawn_logged(command, &log)?);
        if !util::wait_for(Duration::from_secs(30), || {
            util::read_lossy(&log).contains("\"serving\"")
        }) {
            return Err(format!(
                "{} did not start: {}",
                self.name,
                util::read_lossy(&log)
            ));
        }
        Ok(())
    }

    /// A power cut: the supervisor and its modes' groups, SIGKILL at once.
    fn kill(&mut self) {
        let Some(dir) = &self.dir else { return };
        let groups: Vec<i32> = std::fs::read_dir(dir.path().join(".loop-orchestrator/pids"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .trim_end_matches(".json")
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for group in groups {
            util::killpg(group, Signal::SIGKILL);
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        util::signal(child.id() as i32, Signal::SIGTERM);
        util::wait_timeout(&mut child, Duration::from_secs(60)).and_then(|s| s.code())
    }

    fn rows(&self) -> Res<Vec<Row>> {
        Ok(util::read_timing(self.path())?.rows)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------ a run

/// The link state a node's service last wrote to service.json (what `status` shows).
fn link_state(node: &Node) -> String {
    let text = util::read_lossy(&node.path().join(".loop-orchestrator/service.json"));
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["cluster"]["state"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn at_fraction(start: Instant, total: Duration, fraction: f64) {
    let due = start + total.mul_f64(fraction);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
}

fn run_scenario(bin: &Path, options: &Options, scenario: &str) -> Res<bool> {
    let total = Duration::from_secs_f64(options.seconds);
    let lease = options.lease_s;
    let cut = if scenario == "faults" {
        match Cut::netns() {
            Ok(cut) => Some(cut),
            Err(err) => {
                println!("ip netns unavailable ({err}); cutting through a TCP proxy");
                None
            }
        }
    } else {
        None
    };
    let host = host_ip();
    let listen: Vec<&str> = match &cut {
        Some(Cut::Netns { .. }) => vec!["127.0.0.1", &host],
        _ => vec!["127.0.0.1"],
    };
    let server = Server::start(&listen)?;
    let cut = match (scenario, cut) {
        ("faults", None) => Some(Cut::Proxy(Proxy::start(format!(
            "127.0.0.1:{}",
            server.port
        ))?)),
        (_, cut) => cut,
    };
    let direct = server.url("127.0.0.1", server.port);
    let n2_url = match &cut {
        Some(Cut::Netns { .. }) => server.url(&host, server.port),
        Some(Cut::Proxy(proxy)) => server.url("127.0.0.1", proxy.port),
        None => direct.clone(),
    };
    // Faults: modes long enough that a node has cycles in flight when it dies. Lateness:
    // the lightest mode, so the figure is the dispatch's and the claim's.
    let work: &[&str] = if scenario == "lateness" {
        &["true"]
    } else {
        &["sleep", "0.3"]
    };
    let mut nodes = Vec::new();
    for name in NODES {
        let url = if name == "n2" { &n2_url } else { &direct };
        nodes.push(Node::new(
            name,
            options.schedules,
            Some((url.clone(), lease)),
            work,
        )?);
    }
    let mut solo = if scenario == "lateness" {
        Some(Node::new("solo", options.schedules, None, work)?)
    } else {
        None
    };
    println!(
        "cluster {scenario}: {} schedules every second on n1 n2 n3 (lease {lease}s, mode `{}`){}, {:.0} s; server on port {}{}",
        options.schedules,
        work.join(" "),
        if solo.is_some() {
            " and on solo (the same schedules, files only)"
        } else {
            ""
        },
        total.as_secs_f64(),
        server.port,
        cut.as_ref()
            .map(|c| format!("; n2 cut by {}", c.describe()))
            .unwrap_or_default()
    );
    if let Some(solo) = &mut solo {
        solo.start(bin, None)?;
    }
    for node in &mut nodes {
        let c = if node.name == "n2" {
            cut.as_ref()
        } else {
            None
        };
        node.start(bin, c)?;
    }
    let linked = util::wait_for(Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            util::read_lossy(&n.path().join(".loop-orchestrator/service.json"))
                .contains("\"state\": \"up\"")
        })
    });
    if !linked {
        return Err("not every node reached the database within 20 s (see their serve.log)".into());
    }
    let started = Utc::now();
    let clock = Instant::now();
    let mut events: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut kill_at = None;
    let mut cut_span = None;
    let mut down_span = None;
    // What each node cut off said of its link in `status` (service.json), half-way through.
    let mut said_down: Vec<(&str, String)> = Vec::new();
    if scenario == "faults" {
        let cut = cut.as_ref().expect("a cut in this scenario");
        at_fraction(clock, total, 0.25);
        // One node usually wins every schedule of an instant (one claim statement per
        // instant): kill n1 while it runs an instant's cycles, so it dies holding claims.
        let pids = nodes[0].path().join(".loop-orchestrator/pids");
        let busy = util::wait_for(Duration::from_secs(20), || {
            std::fs::read_dir(&pids).map(|d| d.count()).unwrap_or(0) >= 10
        });
        if !busy {
            println!("n1 won no instant for 20 s; killed idle");
        }
        nodes[0].kill();
        let t = Utc::now();
        kill_at = Some(t);
        events.push(("n1 SIGKILLed with its modes".into(), t));
        at_fraction(clock, total, 0.4);
        // Cut n2 while it runs an instant's cycles too: their ends cannot reach the database.
        let pids = nodes[1].path().join(".loop-orchestrator/pids");
        util::wait_for(Duration::from_secs(20), || {
            std::fs::read_dir(&pids).map(|d| d.count()).unwrap_or(0) >= 10
        });
        cut.set(false)?;
        let from = Utc::now();
        events.push(("n2 cut off the database".into(), from));
        std::thread::sleep(CUT / 2);
        said_down.push(("n2", link_state(&nodes[1])));
        std::thread::sleep(CUT / 2);
        cut.set(true)?;
        let to = Utc::now();
        events.push(("n2 reconnected to the database".into(), to));
        cut_span = Some((from, to));
        at_fraction(clock, total, 0.75);
        nodes[0].start(bin, None)?;
        events.push(("n1 started again".into(), Utc::now()));
    } else if scenario == "db" {
        at_fraction(clock, total, 0.3);
        // From the moment the stop begins: a fast shutdown ends the sessions first, then
        // checkpoints.
        let from = Utc::now();
        server.down()?;
        events.push(("database stopped (pg_ctl stop -m fast)".into(), from));
        std::thread::sleep(DB_DOWN / 2);
        for node in &nodes {
            said_down.push((node.name, link_state(node)));
        }
        std::thread::sleep(DB_DOWN / 2);
        server.up()?;
        let to = Utc::now();
        events.push(("database started".into(), to));
        down_span = Some((from, to));
    }
    at_fraction(clock, total, 1.0);
    let stopping = Utc::now();
    let mut codes = Vec::new();
    for node in nodes.iter_mut().chain(solo.as_mut()) {
        codes.push((node.name, node.stop()));
    }

    // ---------------------------------------------------------------- verdicts
    let mut report = Report::default();
    for (what, at) in &events {
        report.info(&format!("t+{:.1}s", (*at - started).as_seconds_f64()), what);
    }
    for (name, state) in &said_down {
        report.check(
            &format!("{name} says in status that the database is unreachable"),
            state,
            state == "down",
        );
    }
    for (name, code) in &codes {
        report.check(
            &format!("{name} stopped cleanly"),
            format!("{code:?}"),
            *code == Some(0),
        );
    }
    let mut all_rows: Vec<(&str, Row)> = Vec::new();
    for node in &nodes {
        for row in node.rows()? {
            all_rows.push((node.name, row));
        }
    }
    let solo_rows = match &solo {
        Some(solo) => solo.rows()?,
        None => Vec::new(),
    };
    let window = (
        trunc(started) + TimeDelta::seconds(EDGE),
        trunc(stopping) - TimeDelta::seconds(EDGE),
    );
    judge_instants(&mut report, &all_rows, options.schedules, window, down_span);
    if let Some(kill) = kill_at {
        judge_takeover(&mut report, &all_rows, kill, lease);
    }
    if let Some((from, to)) = cut_span {
        let while_cut = all_rows
            .iter()
            .filter(|(n, r)| {
                *n == "n2"
                    && r.mode == "cycle"
                    && r.status != Status::Interrupted
                    && r.scheduled_at
                        .is_some_and(|t| t > from + TimeDelta::seconds(1) && t < to)
            })
            .count();
        report.check(
            "n2 cycles for instants while it was cut off (it never fires alone)",
            while_cut,
            while_cut == 0,
        );
        let log = util::read_lossy(&nodes[1].path().join("serve.log"));
        let back = log.matches("cluster: connected and registered").count();
        let after = all_rows
            .iter()
            .filter(|(n, r)| *n == "n2" && r.mode == "cycle" && r.started_at > to)
            .count();
        report.check(
            "n2 back without a restart (reconnections; cycle rows after)",
            format!("{back}; {after}"),
            back >= 1,
        );
    }
    judge_mirror(&mut report, &server, &all_rows)?;
    lateness(
        &mut report,
        &all_rows,
        &solo_rows,
        window.0,
        kill_at.or(down_span.map(|s| s.0)),
    );
    report.print(&format!("cluster {scenario}"));
    let ok = report.violations.is_empty();
    for node in nodes.iter_mut().chain(solo.as_mut()) {
        if let Some(dir) = node.dir.take() {
            util::finish_dir(dir, !ok);
        }
    }
    Ok(ok)
}

fn trunc(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn is_run(status: Status) -> bool {
    !matches!(status, Status::Interrupted)
}

/// Every (schedule, instant) of the window, classified from the cycle rows of all nodes.
fn judge_instants(
    report: &mut Report,
    rows: &[(&str, Row)],
    schedules: usize,
    window: (DateTime<Utc>, DateTime<Utc>),
    down: Option<(DateTime<Utc>, DateTime<Utc>)>,
) {
    type Key = (String, DateTime<Utc>);
    // Per instant: (node, attempt, status, started_at).
    type Seen<'a> = Vec<(&'a str, u32, Status, DateTime<Utc>)>;
    let mut by_instant: BTreeMap<Key, Seen> = BTreeMap::new();
    for (node, row) in rows.iter().filter(|(_, r)| r.mode == "cycle") {
        if let Some(at) = row.scheduled_at {
            by_instant
                .entry((row.schedule.clone(), at))
                .or_default()
                .push((node, row.attempt, row.status, row.started_at));
        }
    }
    let id = |i: usize| format!("s{i:03}");
    // The database outage: from its stop to the first second after its return at which every
    // schedule fired again. Its instants cannot be claimed; a `catch_up` schedule runs the
    // latest of them once, after the return.
    let outage = down.map(|(from, to)| {
        let mut t = trunc(to);
        while t <= window.1 && !(0..schedules).all(|i| by_instant.contains_key(&(id(i), t))) {
            t += TimeDelta::seconds(1);
        }
        (from, to, (t <= window.1).then_some(t))
    });
    let mut doubled = Vec::new();
    let mut once = 0;
    let mut interrupted_only = 0;
    let mut rerun = 0;
    let mut unreported = 0;
    let mut unreported_rerun = 0;
    let mut skipped = 0;
    let mut missing = Vec::new();
    let mut started_while_down = Vec::new();
    let mut caught_up: BTreeMap<String, usize> = BTreeMap::new();
    let mut outage_instants = 0;
    let mut expected = 0;
    let mut t = window.0;
    while t <= window.1 {
        for i in 0..schedules {
            let key = (id(i), t);
            let rows = by_instant.get(&key).cloned().unwrap_or_default();
            if let Some((from, to, resumed)) = outage
                && t > from
                && resumed.is_none_or(|r| t < r)
            {
                outage_instants += 1;
                for r in &rows {
                    if r.3 > from + TimeDelta::seconds(1) && r.3 < to {
                        started_while_down.push(format!("{} {} {:?}", key.0, key.1, r));
                    }
                }
                if rows.iter().any(|r| is_run(r.2) && r.3 >= to) {
                    *caught_up.entry(key.0.clone()).or_default() += 1;
                }
                continue;
            }
            expected += 1;
            let mut per_attempt: BTreeMap<u32, usize> = BTreeMap::new();
            for (_, attempt, status, _) in &rows {
                if is_run(*status) {
                    *per_attempt.entry(*attempt).or_default() += 1;
                }
            }
            if per_attempt.values().any(|n| *n > 1) {
                doubled.push(format!("{} {} {:?}", key.0, key.1, rows));
                continue;
            }
            let runs: BTreeSet<u32> = per_attempt.keys().copied().collect();
            let interrupted = rows.iter().any(|r| r.2 == Status::Interrupted);
            if rows.iter().any(|r| r.2 == Status::Skipped) {
                skipped += 1;
            }
            match (runs.contains(&1), runs.contains(&2), interrupted) {
                (true, false, false) => once += 1,
                (false, false, true) => interrupted_only += 1,
                (false, true, true) => rerun += 1,
                (true, false, true) => unreported += 1,
                (true, true, _) => unreported_rerun += 1,
                (false, false, false) => missing.push(format!("{} {}", key.0, key.1)),
                (false, true, false) => missing.push(format!("{} {} only attempt 2", key.0, key.1)),
            }
        }
        t += TimeDelta::seconds(1);
    }
    report.info(
        "instants judged (the window, outside the database outage)",
        expected,
    );
    report.check(
        "(schedule, instant, attempt) run twice",
        doubled.len(),
        doubled.is_empty(),
    );
    for d in doubled.iter().take(5) {
        report.info("  doubled", d);
    }
    report.check(
        "instants without any cycle row",
        missing.len(),
        missing.is_empty(),
    );
    for m in missing.iter().take(5) {
        report.info("  missing", m);
    }
    report.info("run once", once);
    report.info("  of which skipped by overlap", skipped);
    report.info("interrupted, not run again (no catch_up)", interrupted_only);
    report.info("interrupted, run again once as attempt 2 (catch_up)", rerun);
    report.info(
        "run, but its end never reached the database before its lease ended: also recorded interrupted by a survivor",
        unreported,
    );
    report.info(
        "  the same, and run again as attempt 2 by a survivor (catch_up: at least once)",
        unreported_rerun,
    );
    if let Some((_, to, resumed)) = outage {
        report.info(
            "instants of the database outage (nobody can claim them)",
            outage_instants,
        );
        report.check(
            "cycles started while the database was down (a node firing alone)",
            started_while_down.len(),
            started_while_down.is_empty(),
        );
        for d in started_while_down.iter().take(5) {
            report.info("  while down", d);
        }
        let catch_up_ok = caught_up
            .iter()
            .all(|(s, n)| *n == 1 && s[1..].parse::<usize>().is_ok_and(|i| i % 2 == 0));
        report.check(
            "after the return, outage instants run: once per catch_up schedule, none other",
            format!(
                "{} schedules, {} runs",
                caught_up.len(),
                caught_up.values().sum::<usize>()
            ),
            catch_up_ok,
        );
        report.check(
            "every schedule fires again after the database returns",
            resumed.map_or("never".to_string(), |t| {
                format!(
                    "from the instant {:.1} s after the restart",
                    (t - to).as_seconds_f64()
                )
            }),
            resumed.is_some(),
        );
    }
}

/// n1's claims taken over: the survivors' `interrupted` rows naming n1, how soon after the
/// kill.
fn judge_takeover(report: &mut Report, rows: &[(&str, Row)], kill: DateTime<Utc>, lease: u64) {
    let taken: Vec<(&str, &Row)> = rows
        .iter()
        .filter(|(node, r)| {
            *node != "n1"
                && r.mode == "cycle"
                && r.status == Status::Interrupted
                && r.note.contains("node n1 stopped renewing")
        })
        .map(|(n, r)| (*n, r))
        .collect();
    report.info(
        "n1's claims recorded interrupted by a survivor",
        taken.len(),
    );
    let latest = taken.iter().map(|(_, r)| r.finished_at - kill).max();
    let limit = TimeDelta::milliseconds((lease * 1000 + lease * 1000 / 3) as i64 + 1000);
    report.check(
        "takeover of n1's claims after the kill (limit: lease + lease/3 + 1 s)",
        latest.map_or("none taken over".to_string(), |d| {
            format!("{:.1} s", d.as_seconds_f64())
        }),
        latest.is_some_and(|d| d <= limit),
    );
}

/// `timing_rows` against the three TSVs.
fn judge_mirror(report: &mut Report, server: &Server, rows: &[(&str, Row)]) -> Res<()> {
    let table = server.psql(
        "loop",
        "SELECT node, cycle, mode, attempt, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS'), status FROM timing_rows",
    )?;
    let mut in_table: HashMap<String, usize> = HashMap::new();
    for line in table.lines() {
        *in_table.entry(line.to_string()).or_default() += 1;
    }
    let mut in_files: HashMap<String, usize> = HashMap::new();
    for (node, r) in rows {
        let key = format!(
            "{node}|{}|{}|{}|{}|{}",
            r.cycle,
            r.mode,
            r.attempt,
            r.started_at.format("%Y-%m-%dT%H:%M:%S%.3f"),
            r.status.as_str()
        );
        *in_files.entry(key).or_default() += 1;
    }
    let missing_keys: Vec<&String> = in_files
        .keys()
        .filter(|k| !in_table.contains_key(*k))
        .collect();
    let missing = missing_keys.len();
    let extra = in_table
        .keys()
        .filter(|k| !in_files.contains_key(*k))
        .count();
    let twice = in_table.values().filter(|n| **n > 1).count();
    report.info(
        "rows in the three TSVs / in timing_rows",
        format!("{} / {}", rows.len(), table.lines().count()),
    );
    report.check(
        "timing_rows = the union of the TSVs (missing, extra, twice)",
        format!("{missing}, {extra}, {twice}"),
        missing == 0 && extra == 0 && twice == 0,
    );
    for key in missing_keys.iter().take(5) {
        report.info("  not in timing_rows", key);
    }
    Ok(())
}

/// Lateness (started_at − scheduled_at) of first attempts from the window's start to the
/// first fault: the cluster's (claim included) and the file-only node's.
fn lateness(
    report: &mut Report,
    rows: &[(&str, Row)],
    solo: &[Row],
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) {
    let until = until.unwrap_or(DateTime::<Utc>::MAX_UTC) - TimeDelta::seconds(1);
    let late = |r: &Row| -> Option<i64> {
        let at = r.scheduled_at?;
        (r.mode == "cycle" && r.attempt == 1 && r.status == Status::Ok && at >= from && at < until)
            .then(|| (r.started_at - at).num_microseconds().unwrap_or(0))
    };
    let mut cluster: Vec<i64> = rows.iter().filter_map(|(_, r)| late(r)).collect();
    let mut files: Vec<i64> = solo.iter().filter_map(late).collect();
    for (name, values) in [
        ("cluster (3 nodes, claim included)", &mut cluster),
        ("file-only node", &mut files),
    ] {
        values.sort_unstable();
        if values.is_empty() {
            continue;
        }
        let pick =
            |p: f64| values[((values.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        report.info(
            &format!("lateness {name}"),
            format!(
                "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} fires",
                pick(0.5),
                pick(0.99),
                pick(1.0),
                values.len()
            ),
        );
    }
}
