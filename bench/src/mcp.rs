//! `bench mcp [--calls N]`: the round trip of one MCP `tools/call status` over stdio and over
//! Streamable HTTP (SPEC §9), beside the same query made the way a script makes it without
//! MCP: `loop-orchestrator status --json` as a process. Not part of `all` (a section of its
//! own in BENCHMARKS.md).
//!
//! One instance made by `init`, with 1,000 rows in task_timing.tsv (status reads the whole
//! file). The clients are rmcp's own (the SDK the server is built on), one request at a time
//! after 50 warm-up calls; each sample is one call from send to parsed result. The process
//! baseline spawns the binary, reads its JSON and waits for its exit. `app::status::status`
//! called in this process is the floor: the work every form of the query does.

use std::time::{Duration, Instant};

use loop_orchestrator::instance::Instance;
use loop_orchestrator::timing::{Priority, Row, Status, TimingFile};
use rmcp::RoleClient;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};

use crate::stats::{Samples, ms, ratio};
use crate::sys;

const USAGE: &str =
    "usage: bench mcp [--calls N]   (default 2000 MCP calls, a tenth as many processes)";
const WARM_UP: usize = 50;
const ROWS: usize = 1_000;

pub fn main(args: &[String]) -> Result<(), String> {
    let mut calls = 2_000usize;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--calls" => {
                calls = iter
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or(USAGE)?
            }
            _ => return Err(USAGE.into()),
        }
    }
    let bin = sys::orchestrator_bin()?;
    let dir = sys::tempdir()?;
    prepare(dir.path(), &bin)?;
    // A reqwest built with the workspace's tests has rustls and no provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let floor = in_process(dir.path(), calls);
    let stdio = runtime.block_on(over_stdio(&bin, dir.path(), calls))?;
    let http = runtime.block_on(over_http(&bin, dir.path(), calls))?;
    let process = as_process(&bin, dir.path(), (calls / 10).max(20))?;
    print_table(&floor, &stdio, &http, &process);
    Ok(())
}

/// An `init` instance with [`ROWS`] rows of history.
fn prepare(dir: &std::path::Path, bin: &std::path::Path) -> Result<(), String> {
    sys::time_command(std::process::Command::new(bin).arg("init").arg(dir))?;
    let started = chrono::Utc::now() - chrono::TimeDelta::days(1);
    let rows: Vec<Row> = (0..ROWS)
        .map(|i| {
            let at = started + chrono::TimeDelta::seconds(60 * i as i64);
            Row {
                scheduled_at: Some(at),
                started_at: at,
                finished_at: at + chrono::TimeDelta::seconds(5),
                duration_ms: 5_000,
                priority: Priority::Schedule,
                schedule: "main-loop".into(),
                cycle: format!("c{}", i / 6),
                mode: if i % 6 == 5 { "cycle" } else { "validation" }.into(),
                attempt: 1,
                status: Status::Ok,
                exit_code: Some(0),
                cost_usd: None,
                note: "42 tests passed".into(),
            }
        })
        .collect();
    TimingFile::new(Instance::new(dir).timing())
        .append_all(&rows)
        .map_err(|e| e.to_string())
}

fn in_process(dir: &std::path::Path, calls: usize) -> Samples {
    let inst = Instance::new(dir);
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + WARM_UP {
        let start = Instant::now();
        let report = loop_orchestrator::app::status::status(&inst, chrono::Utc::now());
        let _ = serde_json::to_string(&report);
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    Samples::from_durations_ms(&samples)
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("loop-orchestrator-bench", "1"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25)
}

async fn time_calls(
    client: &RunningService<RoleClient, ClientConfig>,
    calls: usize,
) -> Result<Samples, String> {
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + WARM_UP {
        let start = Instant::now();
        let result = client
            .call_tool(CallToolRequestParams::new("status"))
            .await
            .map_err(|e| format!("tools/call status: {e}"))?;
        let elapsed = start.elapsed();
        if result.is_error == Some(true) || result.structured_content.is_none() {
            return Err(format!("status failed: {result:?}"));
        }
        if i >= WARM_UP {
            samples.push(elapsed);
        }
    }
    Ok(Samples::from_durations_ms(&samples))
}

async fn over_stdio(
    bin: &std::path::Path,
    dir: &std::path::Path,
    calls: usize,
) -> Result<Samples, String> {
    let mut command = tokio::process::Command::new(bin);
    command.arg("--dir").arg(dir).arg("mcp");
    let (transport, _stderr) = rmcp::transport::TokioChildProcess::builder(command)
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mcp: {e}"))?;
    let client = client_config()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .map_err(|e| format!("mcp over stdio did not initialize: {e}"))?;
    let samples = time_calls(&client, calls).await;
    let _ = client.cancel().await;
    samples
}

async fn over_http(
    bin: &std::path::Path,
    dir: &std::path::Path,
    calls: usize,
) -> Result<Samples, String> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(bin)
        .arg("--dir")
        .arg(dir)
        .args(["mcp", "--http", "127.0.0.1:0"])
        .env_remove("LOOP_ORCHESTRATOR_MCP_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start mcp --http: {e}"))?;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
            .await
            .map_err(|_| "mcp --http did not say where it serves")?
            .map_err(|e| e.to_string())?
            .ok_or("mcp --http exited")?;
        if let Some(url) = line.strip_prefix("mcp: serving ") {
            break url.to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url);
    let client = client_config()
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .map_err(|e| format!("mcp over HTTP did not initialize: {e}"))?;
    let samples = time_calls(&client, calls).await;
    let _ = client.cancel().await;
    let _ = child.kill().await;
    samples
}

fn as_process(
    bin: &std::path::Path,
    dir: &std::path::Path,
    runs: usize,
) -> Result<Samples, String> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + 5 {
        let mut command = std::process::Command::new(bin);
        command.arg("--dir").arg(dir).args(["status", "--json"]);
        let elapsed = sys::time_command(&mut command)?;
        if i >= 5 {
            samples.push(elapsed);
        }
    }
    Ok(Samples::from_durations_ms(&samples))
}

fn print_table(floor: &Samples, stdio: &Samples, http: &Samples, process: &Samples) {
    let baseline = process.median();
    println!("| case | calls | p50 | p99 | baseline: `status --json` process, p50 | ratio (p50) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| reference: `app::status::status` in process | {} | {} | {} | – | – |",
        floor.len(),
        ms(floor.median()),
        ms(floor.percentile(99.0))
    );
    println!(
        "| baseline: `status --json` as a process | {} | {} | {} | – | – |",
        process.len(),
        ms(process.median()),
        ms(process.percentile(99.0))
    );
    for (case, samples) in [
        ("MCP over stdio", stdio),
        ("MCP over Streamable HTTP", http),
    ] {
        let r = ratio(samples.median(), baseline).map_or("–".to_string(), |r| format!("{r:.2}×"));
        println!(
            "| {case}: `tools/call status` | {} | {} | {} | {} | {r} |",
            samples.len(),
            ms(samples.median()),
            ms(samples.percentile(99.0)),
            ms(baseline)
        );
    }
}
