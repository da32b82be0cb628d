//! `bench claims [--seconds N] [--url URL]`: claim round trips per second that one cluster
//! node sustains against a real PostgreSQL (SPEC §11). Not part of `all`: it needs a server.
//!
//! The URL is `--url`, else `LOOP_TEST_POSTGRES`; a database `lo_bench_<random>` is created
//! on that server and dropped afterwards. Each case runs for the given seconds on a
//! [`Node`] (its heartbeat, renewals and outbox running as in `serve`), and each claim won
//! is finished at once, as a cycle ending would, so the node holds few leases. Baseline: a
//! one-row `INSERT` committed on one connection, the floor of any durable write (a claim
//! must be durable: a claim lost in a crash of the server could be won twice); `SELECT 1`
//! is shown too, the floor of any round trip.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loop_orchestrator::cluster::{Due, Node, PgUrl, Settings};
use loop_orchestrator::timing::Status;

use crate::stats::{Samples, ms, per_s};

const USAGE: &str =
    "usage: bench claims [--seconds N] [--url URL]   (URL default: $LOOP_TEST_POSTGRES)";

pub fn main(args: &[String]) -> Result<(), String> {
    let mut seconds = 5.0;
    let mut url = std::env::var("LOOP_TEST_POSTGRES").ok();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = iter
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .filter(|s| *s > 0.0)
                    .ok_or(USAGE)?
            }
            "--url" => url = Some(iter.next().ok_or(USAGE)?.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    let admin = url.ok_or_else(|| format!("no server: {USAGE}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(&admin, Duration::from_secs_f64(seconds)))
}

async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to the server: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn run(admin: &str, duration: Duration) -> Result<(), String> {
    let name = format!("lo_bench_{:016x}", rand::random::<u64>());
    let client = admin_client(admin).await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| e.to_string())?;
    let result = cases(&with_db(admin, &name), duration).await;
    let client = admin_client(admin).await?;
    let _ = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    result
}

fn with_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..end])
}

struct Case {
    name: &'static str,
    round_trips: usize,
    elapsed: Duration,
    latency: Samples,
    won: usize,
}

async fn cases(url: &str, duration: Duration) -> Result<(), String> {
    let pg = PgUrl::parse(url).map_err(|e| e.to_string())?;
    let settings = |node: &str| {
        let mut s = Settings::new(pg.clone(), node, format!("bench-{node}"));
        s.schedules_hash = "bench".into();
        s
    };
    let start = |node: &str| {
        let s = settings(node);
        async move {
            Node::start(s)
                .await
                .map(|(node, _events)| node)
                .map_err(|e| e.to_string())
        }
    };
    eprintln!(
        "claims: {} per case on {}",
        ms(duration.as_secs_f64() * 1e3),
        pg
    );

    let floor = floor(url, duration).await?;
    let select = floor_select(url, duration).await?;
    let a = start("a").await?;
    let mut rows = Vec::new();
    rows.push(sequential(&a, "1 schedule per instant", 1, 0, duration).await?);
    rows.push(sequential(&a, "10 schedules per instant", 10, 1 << 40, duration).await?);
    let b = start("b").await?;
    let (ra, rb) = tokio::join!(
        sequential(&a, "2 nodes contending, node a", 1, 2 << 40, duration),
        sequential(&b, "2 nodes contending, node b", 1, 2 << 40, duration),
    );
    let (ra, rb) = (ra?, rb?);
    // Both walk the same instants from the first: each instant tried is won exactly once.
    if ra.won + rb.won != ra.round_trips.max(rb.round_trips) {
        return Err(format!(
            "contended instants: a won {}, b won {}, but {} were tried",
            ra.won,
            rb.won,
            ra.round_trips.max(rb.round_trips)
        ));
    }
    rows.push(ra);
    rows.push(rb);
    a.stop().await.map_err(|e| e.to_string())?;
    b.stop().await.map_err(|e| e.to_string())?;

    println!(
        "| case | round trips | rate | latency p50 | p99 | baseline: one-row `INSERT` | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let floor_rate = floor.round_trips as f64 / floor.elapsed.as_secs_f64();
    for case in [&select, &floor] {
        println!(
            "| {} | {} | {} | {} | {} | – | – |",
            case.name,
            case.round_trips,
            per_s(case.round_trips as f64 / case.elapsed.as_secs_f64()),
            ms(case.latency.median()),
            ms(case.latency.percentile(99.0)),
        );
    }
    for case in &rows {
        let rate = case.round_trips as f64 / case.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2}× |",
            case.name,
            case.round_trips,
            per_s(rate),
            ms(case.latency.median()),
            ms(case.latency.percentile(99.0)),
            per_s(floor_rate),
            rate / floor_rate,
        );
    }
    Ok(())
}

/// Claims successive instants one after another, as the service's loop does.
async fn sequential(
    node: &Node,
    name: &'static str,
    schedules: usize,
    offset: i64,
    duration: Duration,
) -> Result<Case, String> {
    let ids: Vec<String> = (0..schedules).map(|i| format!("s{i}")).collect();
    let mut latencies = Vec::new();
    let mut won = 0;
    let started = Instant::now();
    let mut i: i64 = 0;
    while started.elapsed() < duration {
        let instant = DateTime::<Utc>::from_timestamp(1_900_000_000 + offset + i, 0)
            .ok_or("instant out of range")?;
        let due: Vec<Due> = ids
            .iter()
            .map(|s| Due {
                schedule: s.clone(),
                cycle: format!("{i}-{s}"),
                cost_since: None,
            })
            .collect();
        let t = Instant::now();
        let claimed = node.claim(instant, &due).await.map_err(|e| e.to_string())?;
        latencies.push(t.elapsed());
        won += claimed.won.len();
        for claim in claimed.won {
            node.finish(claim.fence, Status::Ok);
        }
        i += 1;
    }
    Ok(Case {
        name,
        round_trips: latencies.len(),
        elapsed: started.elapsed(),
        latency: Samples::from_durations_ms(&latencies),
        won,
    })
}

/// One-row inserts, each committed: what any durable write costs on this server.
async fn floor(url: &str, duration: Duration) -> Result<Case, String> {
    let client = admin_client(url).await?;
    client
        .batch_execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, a text)")
        .await
        .map_err(|e| e.to_string())?;
    let statement = client
        .prepare("INSERT INTO bench_floor (a) VALUES ('x')")
        .await
        .map_err(|e| e.to_string())?;
    timed("baseline: one-row `INSERT`, committed", duration, || {
        client.execute(&statement, &[])
    })
    .await
}

async fn floor_select(url: &str, duration: Duration) -> Result<Case, String> {
    let client = admin_client(url).await?;
    let statement = client
        .prepare("SELECT 1")
        .await
        .map_err(|e| e.to_string())?;
    timed("reference: `SELECT 1`", duration, || {
        client.execute(&statement, &[])
    })
    .await
}

async fn timed<F: Future<Output = Result<u64, tokio_postgres::Error>>>(
    name: &'static str,
    duration: Duration,
    mut op: impl FnMut() -> F,
) -> Result<Case, String> {
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        op().await.map_err(|e| e.to_string())?;
        latencies.push(t.elapsed());
    }
    Ok(Case {
        name,
        round_trips: latencies.len(),
        elapsed: started.elapsed(),
        latency: Samples::from_durations_ms(&latencies),
        won: 0,
    })
}
