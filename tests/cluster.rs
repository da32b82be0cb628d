//! The cluster's database layer against a real PostgreSQL (SPEC §11).
//!
//! Each test creates a database of its own on the server named by `LOOP_TEST_POSTGRES`
//! (e.g. `postgres://postgres@127.0.0.1:5432/postgres`) and drops it afterwards; without the
//! variable each test says so and passes. Outages are made with a small TCP proxy between a
//! node and the server that can cut, freeze (a network that silently drops everything) or
//! slow the link, or by terminating the node's backends.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use loop_orchestrator::cluster::{
    ClaimKey, ClusterError, Db, DbError, Due, Event, Link, LostReason, Node, PgUrl, Registered,
    Registration, Settings,
};
use loop_orchestrator::timing::{Priority, Row, Status, TimingFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;

mod common;

const ENV: &str = "LOOP_TEST_POSTGRES";
const LEASE: Duration = Duration::from_secs(3);

/// A database of the test's own, dropped when the test ends (passed or not).
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn new() -> Option<TestDb> {
        let Ok(admin) = std::env::var(ENV) else {
            // CI provides every tool: a skip there would hide a failure.
            assert!(
                std::env::var_os("LOOP_TEST_REQUIRE_ALL").is_none(),
                "{ENV} is not set, and LOOP_TEST_REQUIRE_ALL says every test must run"
            );
            eprintln!(
                "skipped: set {ENV} (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run the cluster tests against a real PostgreSQL"
            );
            return None;
        };
        let name = format!("lo_test_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| panic!("{ENV} names a server that does not answer: {err}"));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        drop(client);
        let _ = connection.await;
        let url = with_db(&admin, &name);
        Some(TestDb { admin, name, url })
    }

    fn pg(&self) -> PgUrl {
        PgUrl::parse(&self.url).expect("test URL")
    }

    fn settings(&self, node: &str) -> Settings {
        let mut settings = Settings::new(self.pg(), node, format!("instance-of-{node}"));
        settings.lease = LEASE;
        settings.schedules_hash = "h1".into();
        settings
    }

    async fn db(&self) -> Db {
        Db::connect(&self.pg(), LEASE).await.expect("connect")
    }

    /// The server's address, for a proxy in front of it.
    fn upstream(&self) -> SocketAddr {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("{ENV} must name a TCP host for the proxy tests, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host = if host == "localhost" {
            "127.0.0.1".into()
        } else {
            host
        };
        format!("{host}:{port}")
            .parse()
            .expect("numeric host in the test URL")
    }

    /// The URL with the host and port of `proxy`.
    fn via(&self, proxy: &Proxy) -> PgUrl {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        PgUrl::parse(&format!(
            "postgres://{user}{password}@127.0.0.1:{}/{}?sslmode=disable",
            proxy.port, self.name
        ))
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its
        // own with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn with_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

/// A TCP proxy between nodes and the server: `cut` closes every connection and refuses
/// new ones, `freeze` stops forwarding without closing (a network that drops everything),
/// `delay` holds every answer from the server that long.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    frozen: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            frozen: Arc::new(AtomicBool::new(false)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let frozen = self.frozen.clone();
        let delay = self.delay_ms.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = tokio::spawn(pipe(
                    client_read,
                    server_write,
                    frozen.clone(),
                    Arc::new(AtomicU64::new(0)),
                ));
                let down = tokio::spawn(pipe(
                    server_read,
                    client_write,
                    frozen.clone(),
                    delay.clone(),
                ));
                let mut tasks = tasks.lock().unwrap();
                tasks.push(up.abort_handle());
                tasks.push(down.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes every connection and stops listening.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    async fn restore(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        // The aborted accept task lets go of the port when the runtime next drops it.
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", self.port)).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on the proxy's port {} again", self.port);
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Forwards bytes one way. The delay is latency, not a rate: each chunk leaves `delay`
/// after it arrived, so answers in flight together are not queued behind each other.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
) {
    let (chunks, mut queue) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = tokio::time::Instant::now()
                + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
            if chunks.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = queue.recv().await {
            tokio::time::sleep_until(due).await;
            // Frozen: what was read is held back, as a network dropping packets would.
            while frozen.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

/// Waits for the first event that `pred` accepts, skipping others.
async fn wait_for(
    events: &mut UnboundedReceiver<Event>,
    limit: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let found = tokio::time::timeout(limit, async {
        while let Some(event) = events.recv().await {
            if pred(&event) {
                return event;
            }
            seen.lock().unwrap().push(event);
        }
        panic!("event channel closed");
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no such event within {limit:?}; saw {:?}",
            seen.lock().unwrap()
        )
    })
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
}

fn due(schedule: &str, instant: DateTime<Utc>) -> Due {
    Due {
        schedule: schedule.into(),
        cycle: format!("{}-{schedule}", instant.format("%Y%m%dT%H%M%S")),
        cost_since: None,
    }
}

fn row(schedule: &str, cycle: &str, mode: &str, started: DateTime<Utc>, status: Status) -> Row {
    Row {
        scheduled_at: Some(started),
        started_at: started,
        finished_at: started + TimeDelta::milliseconds(1500),
        duration_ms: 1500,
        priority: Priority::Schedule,
        schedule: schedule.into(),
        cycle: cycle.into(),
        mode: mode.into(),
        attempt: 1,
        status,
        exit_code: Some(0),
        cost_usd: Some(0.25),
        note: "done\0with a NUL".into(),
    }
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.query_raw(sql).await.unwrap()[0].get(0)
}

fn dead_node_registration(node: &str) -> Registration<'_> {
    Registration {
        node,
        instance_id: "dead-instance",
        session: "dead-session",
        version: "0",
        schedules_hash: "h1",
        lease: Duration::from_millis(500),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_first_starts_migrate_the_schema_once() {
    let Some(t) = TestDb::new().await else { return };
    let url = t.pg();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Db::connect(&url, LEASE).await.map(|db| db.applied.clone()) })
        })
        .collect();
    let mut applied = Vec::new();
    for start in starts {
        applied.push(start.await.unwrap().expect("every start connects"));
    }
    assert_eq!(
        applied.iter().filter(|a| !a.is_empty()).count(),
        1,
        "exactly one start migrates: {applied:?}"
    );
    assert!(applied.contains(&vec![1]));
    let db = t.db().await;
    assert!(db.applied.is_empty(), "a later start finds the work done");
    assert_eq!(
        count(&db, "SELECT count(*) FROM schema_migrations").await,
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM claims").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_migrated_by_a_newer_binary_is_refused() {
    let Some(t) = TestDb::new().await else { return };
    let db = t.db().await;
    db.execute_raw("INSERT INTO schema_migrations (version, name) VALUES (99, 'future')")
        .await
        .unwrap();
    let err = Db::connect(&t.pg(), LEASE).await.unwrap_err();
    assert!(
        matches!(
            err,
            DbError::SchemaTooNew {
                found: 99,
                known: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade"));
    let err = Node::start(t.settings("a")).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::Db(DbError::SchemaTooNew { .. })),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_claiming_the_same_100_instants_claim_each_exactly_once() {
    let Some(t) = TestDb::new().await else { return };
    let (a, _ea) = Node::start(t.settings("a")).await.unwrap();
    let (b, _eb) = Node::start(t.settings("b")).await.unwrap();
    let schedules = ["alpha", "beta", "gamma"];
    let run = |node: Node| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            let mut taken = 0;
            for i in 0..100 {
                let instant = at(i * 60);
                let due: Vec<Due> = schedules.iter().map(|s| due(s, instant)).collect();
                let claimed = node.claim(instant, &due).await.expect("claim");
                assert!(claimed.late.is_empty());
                taken += claimed.taken.len();
                won.extend(claimed.won.into_iter().map(|c| c.key));
            }
            (won, taken)
        })
    };
    let (ra, rb) = tokio::join!(run(a.clone()), run(b.clone()));
    let (won_a, taken_a) = ra.unwrap();
    let (won_b, taken_b) = rb.unwrap();
    let set_a: HashSet<&ClaimKey> = won_a.iter().collect();
    let set_b: HashSet<&ClaimKey> = won_b.iter().collect();
    assert_eq!(set_a.len(), won_a.len(), "a won no instant twice");
    assert!(set_a.is_disjoint(&set_b), "no instant won by both");
    assert_eq!(won_a.len() + won_b.len(), 300, "every instant won by one");
    assert_eq!(taken_a, won_b.len(), "a lost exactly what b won");
    assert_eq!(taken_b, won_a.len());
    let db = t.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM claims").await, 300);
    assert_eq!(
        count(&db, "SELECT count(*) FROM claims WHERE node = 'a'").await,
        won_a.len() as i64
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT fence) FROM claims").await,
        300,
        "every claim its own fencing token"
    );
    assert_eq!(a.state().held.len(), won_a.len());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_once_and_retried_only_for_catch_up() {
    let Some(t) = TestDb::new().await else { return };
    let dead = t.db().await;
    dead.register(&dead_node_registration("dead"))
        .await
        .unwrap();
    let instant = at(0);
    let won = dead
        .claim(
            "dead",
            "dead-session",
            Duration::from_millis(300),
            instant,
            &[due("catchy", instant), due("plain", instant)],
        )
        .await
        .unwrap();
    assert_eq!(won.len(), 2);
    // Before the lease ends nothing is taken over.
    let survivor = t.db().await;
    let catch_up = vec!["catchy".to_string()];
    let early = survivor
        .takeover("s1", "s1-session", LEASE, &[], &catch_up)
        .await
        .unwrap();
    assert!(early.interrupted.is_empty() && early.retries.is_empty());
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Two survivors race for the same expired claims: each is taken over once.
    let other = t.db().await;
    let (p1, p2) = tokio::join!(
        survivor.takeover("s1", "s1-session", LEASE, &[], &catch_up),
        other.takeover("s2", "s2-session", LEASE, &[], &catch_up),
    );
    let (p1, p2) = (p1.unwrap(), p2.unwrap());
    let interrupted: Vec<&str> = p1
        .interrupted
        .iter()
        .chain(&p2.interrupted)
        .map(|i| i.key.schedule.as_str())
        .collect();
    assert_eq!(
        interrupted.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["catchy", "plain"])
    );
    assert_eq!(
        interrupted.len(),
        2,
        "each claim interrupted by one survivor"
    );
    assert!(
        p1.interrupted
            .iter()
            .chain(&p2.interrupted)
            .all(|i| i.node == "dead")
    );
    let retries: Vec<_> = p1.retries.iter().chain(&p2.retries).collect();
    assert_eq!(
        retries.len(),
        1,
        "only the catch_up schedule is retried: {retries:?}"
    );
    assert_eq!(retries[0].key.schedule, "catchy");
    assert_eq!(retries[0].key.attempt, 2);
    let catchy = won.iter().find(|c| c.key.schedule == "catchy").unwrap();
    assert_eq!(
        retries[0].cycle, catchy.cycle,
        "the retry keeps the cycle's id"
    );
    let db = t.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM claims WHERE state = 'interrupted' AND attempt = 1"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM claims WHERE attempt = 2 AND state = 'running'"
        )
        .await,
        1
    );
    // A third pass finds nothing more to do.
    let again = survivor
        .takeover("s1", "s1-session", LEASE, &[], &catch_up)
        .await
        .unwrap();
    assert!(again.interrupted.is_empty() && again.retries.is_empty());

    // A running node does the same on its own, and reports it.
    let gone = dead
        .claim(
            "dead",
            "dead-session",
            Duration::from_millis(300),
            at(60),
            &[due("catchy", at(60))],
        )
        .await
        .unwrap();
    assert_eq!(gone.len(), 1);
    let mut settings = t.settings("live");
    settings.catch_up = catch_up.clone();
    let (node, mut events) = Node::start(settings).await.unwrap();
    let event = wait_for(&mut events, LEASE * 3, |e| matches!(e, Event::TakenOver(_))).await;
    let Event::TakenOver(pass) = event else {
        unreachable!()
    };
    assert_eq!(pass.interrupted.len(), 1);
    assert_eq!(pass.interrupted[0].key.scheduled_at, at(60));
    assert_eq!(pass.retries.len(), 1);
    assert_eq!(pass.retries[0].key.attempt, 2);
    assert!(
        node.state().held.contains(&pass.retries[0].key),
        "the retry is held and renewed by the survivor"
    );
    // It keeps it past a lease: renewals work.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(node.state().held.contains(&pass.retries[0].key));
    node.finish(pass.retries[0].fence, Status::Ok);
    node.flush().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM claims WHERE attempt = 2 AND node = 'live' AND state = 'done' AND status = 'ok'").await,
        1
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_was_taken_over_is_refused_renewal() {
    let Some(t) = TestDb::new().await else { return };
    let (a, mut events) = Node::start(t.settings("a")).await.unwrap();
    let claimed = a
        .claim(at(0), &[due("s", at(0)), due("t", at(0))])
        .await
        .unwrap();
    assert_eq!(claimed.won.len(), 2);
    let fence = claimed.won[0].fence;
    // As if `a` had been paused past its lease: the lease ends, a survivor takes over.
    let db = t.db().await;
    db.execute_raw(&format!(
        "UPDATE claims SET lease_until = now() - interval '1 second' WHERE fence = {fence}"
    ))
    .await
    .unwrap();
    let pass = db
        .takeover("b", "b-session", LEASE, &[], &[])
        .await
        .unwrap();
    assert_eq!(pass.interrupted.len(), 1);
    assert_eq!(pass.interrupted[0].node, "a");
    // The database refuses a's renewal and its finish of that claim.
    let beat = db
        .beat(
            "a",
            a.session(),
            "h1",
            LEASE,
            &[fence, claimed.won[1].fence],
        )
        .await
        .unwrap();
    assert!(beat.registered);
    assert_eq!(beat.renewed, vec![claimed.won[1].fence]);
    assert!(
        db.finish("a", &[(fence, Status::Ok)])
            .await
            .unwrap()
            .is_empty()
    );
    // a learns it at its next heartbeat and is told to stop that cycle only.
    let event = wait_for(&mut events, LEASE, |e| matches!(e, Event::LeaseLost { .. })).await;
    assert_eq!(
        event,
        Event::LeaseLost {
            claims: vec![claimed.won[0].key.clone()],
            reason: LostReason::Fenced
        }
    );
    assert_eq!(a.state().held, vec![claimed.won[1].key.clone()]);
    assert_eq!(
        count(&db, &format!("SELECT count(*) FROM claims WHERE fence = {fence} AND state = 'interrupted' AND taken_over_by = 'b'")).await,
        1
    );
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_database_stops_its_cycles_and_claims_nothing() {
    let Some(t) = TestDb::new().await else { return };
    let proxy = Proxy::start(t.upstream()).await;
    let mut settings = t.settings("a");
    settings.url = t.via(&proxy);
    let (a, mut events) = Node::start(settings).await.unwrap();
    let claimed = a.claim(at(0), &[due("s", at(0))]).await.unwrap();
    assert_eq!(claimed.won.len(), 1);
    // A network that silently drops everything: nothing answers, nothing closes.
    proxy.freeze(true);
    let cut_at = tokio::time::Instant::now();
    let event = wait_for(&mut events, LEASE * 2, |e| {
        matches!(e, Event::LeaseLost { .. })
    })
    .await;
    let waited = cut_at.elapsed();
    assert_eq!(
        event,
        Event::LeaseLost {
            claims: vec![claimed.won[0].key.clone()],
            reason: LostReason::NotRenewed
        }
    );
    assert!(
        waited < LEASE,
        "told to stop before the database's lease ends ({waited:?})"
    );
    let down = async {
        while !matches!(a.state().link, Link::Down { .. }) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(LEASE, down)
        .await
        .expect("the link reported down");
    // Disconnected, the node claims nothing and says so at once.
    let started = tokio::time::Instant::now();
    let refused = a.claim(at(60), &[due("s", at(60))]).await;
    assert!(
        matches!(refused, Err(ClusterError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        a.state().line().contains("claiming nothing"),
        "{}",
        a.state().line()
    );
    // The network returns: the node reconnects without a restart and releases the claim it
    // gave up, so a survivor need not wait for it.
    proxy.cut();
    proxy.restore().await;
    wait_for(&mut events, LEASE * 4, |e| *e == Event::Up).await;
    let db = t.db().await;
    let released = async {
        loop {
            let n = count(
                &db,
                "SELECT count(*) FROM claims WHERE state = 'interrupted' AND released",
            )
            .await;
            if n == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 2, released)
        .await
        .expect("the lost claim released");
    let claimed = a.claim(at(60), &[due("s", at(60))]).await.unwrap();
    assert_eq!(claimed.won.len(), 1, "claims again once back");
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_answered_after_its_trust_window_is_not_started() {
    let Some(t) = TestDb::new().await else { return };
    let proxy = Proxy::start(t.upstream()).await;
    let mut settings = t.settings("a");
    settings.url = t.via(&proxy);
    let (a, _events) = Node::start(settings).await.unwrap();
    // Answers now take longer than 2/3 of the lease.
    proxy.delay(LEASE * 3 / 4);
    let claimed = a.claim(at(0), &[due("s", at(0))]).await.unwrap();
    assert!(claimed.won.is_empty(), "{claimed:?}");
    assert_eq!(claimed.late.len(), 1);
    assert!(a.state().held.is_empty());
    proxy.delay(Duration::ZERO);
    // Released by the node (not left to expire), so a survivor retries it for catch_up.
    let db = t.db().await;
    let released = async {
        while count(
            &db,
            "SELECT count(*) FROM claims WHERE released AND state = 'interrupted'",
        )
        .await
            != 1
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 4, released)
        .await
        .expect("late claim released");
    let pass = db
        .takeover("b", "b-session", LEASE, &[], &["s".to_string()])
        .await
        .unwrap();
    assert!(
        pass.interrupted.is_empty(),
        "a released claim gets no second interrupted row"
    );
    assert_eq!(pass.retries.len(), 1);
    assert_eq!(pass.retries[0].key.attempt, 2);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_rows_are_inserted_once() {
    let Some(t) = TestDb::new().await else { return };
    let db = t.db().await;
    let start = Utc::now();
    let rows = vec![
        row("s", "c1", "implementation", start, Status::Failed),
        // A fallback of the same mode and attempt: a row of its own.
        row(
            "s",
            "c1",
            "implementation",
            start + TimeDelta::seconds(2),
            Status::Ok,
        ),
        row("s", "c1", "cycle", start, Status::Ok),
    ];
    assert_eq!(db.insert_rows("a", &rows).await.unwrap(), 3);
    // A retry after a lost reply: nothing doubles.
    assert_eq!(db.insert_rows("a", &rows).await.unwrap(), 0);
    // The same row read back from the TSV (milliseconds only) is the same row.
    let mut from_file = rows[0].clone();
    from_file.started_at = DateTime::from_timestamp_millis(start.timestamp_millis()).unwrap();
    from_file.finished_at =
        DateTime::from_timestamp_millis(rows[0].finished_at.timestamp_millis()).unwrap();
    assert_eq!(db.insert_rows("a", &[from_file]).await.unwrap(), 0);
    // Another node's row of the same cycle id is its own.
    assert_eq!(db.insert_rows("b", &rows[2..]).await.unwrap(), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM timing_rows").await, 4);
    let back = db.timing_rows(None, Some("s")).await.unwrap();
    assert_eq!(back.len(), 4);
    assert_eq!(back[0].1.note, "done with a NUL");
    assert_eq!(back[0].1.cost_usd, Some(0.25));

    // Through a node: mirrored twice, flushed twice, stored once.
    let (a, _events) = Node::start(t.settings("n")).await.unwrap();
    a.mirror(rows.clone());
    a.flush().await.unwrap();
    a.mirror(rows.clone());
    a.flush().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM timing_rows WHERE node = 'n'").await,
        3
    );
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_flushes_after_the_database_comes_back() {
    let Some(t) = TestDb::new().await else { return };
    let proxy = Proxy::start(t.upstream()).await;
    let mut settings = t.settings("a");
    settings.url = t.via(&proxy);
    let (a, mut events) = Node::start(settings).await.unwrap();
    proxy.cut();
    wait_for(&mut events, LEASE * 2, |e| matches!(e, Event::Down { .. })).await;
    let start = Utc::now();
    let rows: Vec<Row> = (0..20)
        .map(|i| {
            row(
                "s",
                &format!("c{i}"),
                "cycle",
                start + TimeDelta::seconds(i),
                Status::Ok,
            )
        })
        .collect();
    a.mirror(rows);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.state().outbox_rows, 20, "held while the database is away");
    let db = t.db().await;
    assert_eq!(count(&db, "SELECT count(*) FROM timing_rows").await, 0);
    proxy.restore().await;
    wait_for(&mut events, LEASE * 4, |e| *e == Event::Up).await;
    let sent = async {
        while count(&db, "SELECT count(*) FROM timing_rows WHERE node = 'a'").await != 20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 2, sent)
        .await
        .expect("outbox sent");
    assert_eq!(a.state().outbox_rows, 0);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_is_replaced_and_claims_go_on() {
    let Some(t) = TestDb::new().await else { return };
    let (a, mut events) = Node::start(t.settings("a")).await.unwrap();
    let claimed = a.claim(at(0), &[due("s", at(0))]).await.unwrap();
    let admin = t.db().await;
    admin
        .execute_raw(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            t.name
        ))
        .await
        .unwrap();
    wait_for(&mut events, LEASE * 2, |e| matches!(e, Event::Down { .. })).await;
    wait_for(&mut events, LEASE * 2, |e| *e == Event::Up).await;
    // Reconnected within the trust window: the claim is still held and renewed.
    tokio::time::sleep(LEASE).await;
    assert_eq!(a.state().held, vec![claimed.won[0].key.clone()]);
    let next = a.claim(at(60), &[due("s", at(60))]).await.unwrap();
    assert_eq!(next.won.len(), 1);
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_dropped_past_the_outbox_bound_are_resent_from_the_tsv() {
    let Some(t) = TestDb::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let tsv = TimingFile::new(dir.path().join("task_timing.tsv"));
    // Written by an earlier process that never sent them.
    let start = Utc::now() - TimeDelta::minutes(5);
    let earlier: Vec<Row> = (0..3)
        .map(|i| {
            row(
                "s",
                &format!("old{i}"),
                "cycle",
                start + TimeDelta::seconds(i),
                Status::Ok,
            )
        })
        .collect();
    tsv.append_all(&earlier).unwrap();
    let proxy = Proxy::start(t.upstream()).await;
    let mut settings = t.settings("a");
    settings.url = t.via(&proxy);
    settings.outbox_capacity = 4;
    settings.backfill_from = Some(tsv.path().to_path_buf());
    let (a, mut events) = Node::start(settings).await.unwrap();
    let db = t.db().await;
    let resent = async {
        while count(
            &db,
            "SELECT count(*) FROM timing_rows WHERE cycle LIKE 'old%'",
        )
        .await
            != 3
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 2, resent)
        .await
        .expect("rows of the earlier process sent at start");
    proxy.cut();
    wait_for(&mut events, LEASE * 2, |e| matches!(e, Event::Down { .. })).await;
    let now = Utc::now();
    let rows: Vec<Row> = (0..10)
        .map(|i| {
            row(
                "s",
                &format!("new{i}"),
                "cycle",
                now + TimeDelta::seconds(i),
                Status::Ok,
            )
        })
        .collect();
    tsv.append_all(&rows).unwrap();
    a.mirror(rows);
    let event = wait_for(&mut events, LEASE, |e| {
        matches!(e, Event::RowsDropped { .. })
    })
    .await;
    assert_eq!(
        event,
        Event::RowsDropped {
            count: 6,
            resend: true
        }
    );
    assert_eq!(a.state().outbox_rows, 4);
    proxy.restore().await;
    wait_for(&mut events, LEASE * 4, |e| *e == Event::Up).await;
    let all = async {
        while count(
            &db,
            "SELECT count(*) FROM timing_rows WHERE cycle LIKE 'new%'",
        )
        .await
            != 10
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 2, all)
        .await
        .expect("dropped rows resent from the TSV");
    assert_eq!(
        count(&db, "SELECT count(*) FROM timing_rows").await,
        13,
        "nothing doubled"
    );
    a.stop().await.unwrap();
}

/// Found by the cluster harness: a node restarted after a SIGKILL writes rows at once (the
/// reaper's `interrupted` rows of the killed process's cycles); sent first, they moved the
/// "newest row in the table" past the rows the killed process had left unsent, and those
/// were never resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_killed_process_left_unsent_are_resent_when_the_restart_writes_rows_first() {
    let Some(t) = TestDb::new().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let tsv = TimingFile::new(dir.path().join("task_timing.tsv"));
    let db = t.db().await;
    let killed_at = Utc::now() - TimeDelta::minutes(2);
    // The killed process sent its first row, not the two after it.
    let left: Vec<Row> = (0..3)
        .map(|i| {
            row(
                "s",
                &format!("left{i}"),
                "ok",
                killed_at - TimeDelta::seconds(3 - i),
                Status::Ok,
            )
        })
        .collect();
    tsv.append_all(&left).unwrap();
    db.insert_rows("a", &left[..1]).await.unwrap();
    let mut settings = t.settings("a");
    settings.backfill_from = Some(tsv.path().to_path_buf());
    let (a, _events) = Node::start(settings).await.unwrap();
    // The restart's own row, much newer, queued before the first flush.
    let reaped = row("s", "reaped", "cycle", Utc::now(), Status::Interrupted);
    tsv.append(&reaped).unwrap();
    a.mirror([reaped]);
    a.flush().await.unwrap();
    let sent = async {
        while count(&db, "SELECT count(*) FROM timing_rows").await != 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(LEASE * 2, sent)
        .await
        .unwrap_or_else(|_| panic!("rows left unsent by the killed process were not resent"));
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_node_with_the_same_name_is_refused() {
    let Some(t) = TestDb::new().await else { return };
    let (first, _events) = Node::start(t.settings("a")).await.unwrap();
    let mut twin = t.settings("a");
    twin.instance_id = "another-instance".into();
    let err = Node::start(twin).await.unwrap_err();
    match &err {
        ClusterError::NameTaken {
            node, instance_id, ..
        } => {
            assert_eq!(node, "a");
            assert_eq!(instance_id, "instance-of-a");
        }
        other => panic!("expected NameTaken, got {other}"),
    }
    assert!(err.to_string().contains("LOOP_ORCHESTRATOR_NODE"), "{err}");
    first.stop().await.unwrap();
    // A restart of the same instance takes the name back at once, and the claims of its
    // crashed previous process expire for a takeover pass.
    let db = t.db().await;
    let mut crashed = dead_node_registration("b");
    crashed.instance_id = "instance-of-b";
    crashed.lease = LEASE;
    db.register(&crashed).await.unwrap();
    let won = db
        .claim("b", crashed.session, LEASE, at(0), &[due("s", at(0))])
        .await
        .unwrap();
    assert_eq!(won.len(), 1);
    let (restarted, _events2) = Node::start(t.settings("b")).await.unwrap();
    let pass = db
        .takeover("c", "c-session", LEASE, &[], &[])
        .await
        .unwrap();
    assert_eq!(pass.interrupted.len(), 1);
    assert_eq!(pass.interrupted[0].node, "b");
    // Once stopped, the name is free for anyone.
    restarted.stop().await.unwrap();
    let mut other = t.settings("b");
    other.instance_id = "another-instance".into();
    let (third, _events3) = Node::start(other).await.unwrap();
    third.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_releases_claims_so_a_survivor_retries_at_once() {
    let Some(t) = TestDb::new().await else { return };
    let (a, _events) = Node::start(t.settings("a")).await.unwrap();
    let claimed = a
        .claim(
            at(0),
            &[
                due("catchy", at(0)),
                due("plain", at(0)),
                due("ended", at(0)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(claimed.won.len(), 3);
    let ended = claimed
        .won
        .iter()
        .find(|c| c.key.schedule == "ended")
        .unwrap();
    a.finish(ended.fence, Status::Ok);
    a.stop().await.unwrap();
    let db = t.db().await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM claims WHERE released AND state = 'interrupted'"
        )
        .await,
        2
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM claims WHERE schedule = 'ended' AND state = 'done' AND status = 'ok'").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM nodes WHERE name = 'a' AND stopped_at IS NOT NULL"
        )
        .await,
        1
    );
    // No lease to wait out.
    let pass = db
        .takeover(
            "b",
            "b-session",
            LEASE,
            &[],
            &["catchy".to_string(), "ended".to_string()],
        )
        .await
        .unwrap();
    assert!(
        pass.interrupted.is_empty(),
        "the stopping node wrote its own rows"
    );
    assert_eq!(pass.retries.len(), 1);
    assert_eq!(pass.retries[0].key.schedule, "catchy");
    assert_eq!(pass.retries[0].key.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_escalation_pauses_and_budgets_hold_across_nodes() {
    let Some(t) = TestDb::new().await else { return };
    let (a, _ea) = Node::start(t.settings("a")).await.unwrap();
    let (b, _eb) = Node::start(t.settings("b")).await.unwrap();
    let first = a.claim(at(0), &[due("s", at(0))]).await.unwrap();
    assert_eq!(first.won.len(), 1);
    assert_eq!(first.won[0].rules.running_on, None);
    assert_eq!(b.running_elsewhere("s").await.unwrap(), Some("a".into()));
    assert_eq!(a.running_elsewhere("s").await.unwrap(), None);
    let mut next = due("s", at(60));
    next.cost_since = Some(Utc::now() - TimeDelta::hours(1));
    b.mirror(vec![row(
        "s",
        "c1",
        "implementation",
        Utc::now(),
        Status::Ok,
    )]);
    b.flush().await.unwrap();
    a.escalate("s", "fingerprint-1", 3).await.unwrap();
    b.pause("s", Utc::now() + TimeDelta::minutes(15), "rate limited")
        .await
        .unwrap();
    let second = b.claim(at(60), &[next]).await.unwrap();
    let rules = &second.won[0].rules;
    assert_eq!(
        rules.running_on,
        Some("a".into()),
        "a's cycle counts for overlap on b"
    );
    let escalation = rules.escalation.as_ref().expect("escalation seen by b");
    assert_eq!(escalation.fingerprint, "fingerprint-1");
    assert_eq!(escalation.node, "a");
    assert_eq!(rules.paused.as_ref().unwrap().reason, "rate limited");
    assert_eq!(rules.cost_since, Some(0.25));
    // A shorter pause does not shorten one in force.
    b.pause("s", Utc::now() + TimeDelta::minutes(1), "shorter")
        .await
        .unwrap();
    assert_eq!(a.pauses().await.unwrap()[0].reason, "rate limited");
    assert!(b.resume("s").await.unwrap());
    assert!(!b.resume("s").await.unwrap(), "nothing left to resume");
    assert!(a.escalations().await.unwrap().is_empty());
    a.finish(first.won[0].fence, Status::Ok);
    a.flush().await.unwrap();
    assert_eq!(b.running_elsewhere("s").await.unwrap(), None);
    let third = b.claim(at(120), &[due("s", at(120))]).await.unwrap();
    assert_eq!(third.won[0].rules.escalation, None);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flags_a_node_whose_schedules_differ_from_the_majority() {
    let Some(t) = TestDb::new().await else { return };
    let (a, _ea) = Node::start(t.settings("a")).await.unwrap();
    let (b, _eb) = Node::start(t.settings("b")).await.unwrap();
    let mut odd = t.settings("c");
    odd.schedules_hash = "h2".into();
    let (c, mut ec) = Node::start(odd).await.unwrap();
    let event = wait_for(&mut ec, LEASE * 2, |e| matches!(e, Event::Mismatch { .. })).await;
    assert_eq!(
        event,
        Event::Mismatch {
            ours: "h2".into(),
            majority: Some("h1".into())
        }
    );
    a.claim(at(0), &[due("s", at(0))]).await.unwrap();
    b.claim(at(60), &[due("s", at(60)), due("t", at(60))])
        .await
        .unwrap();
    let status = c.cluster_status().await.unwrap();
    assert_eq!(status.majority_hash.as_deref(), Some("h1"));
    let flagged: Vec<&str> = status
        .nodes
        .iter()
        .filter(|n| n.hash_differs)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(flagged, ["c"]);
    assert!(
        status
            .nodes
            .iter()
            .all(|n| n.live && n.heartbeat_age < LEASE)
    );
    let last: Vec<(&str, &str)> = status
        .last_cycles
        .iter()
        .map(|l| (l.key.schedule.as_str(), l.node.as_str()))
        .collect();
    assert_eq!(last, [("s", "b"), ("t", "b")]);
    assert_eq!(status.running.len(), 3);
    // A stopped node is no longer live and no longer counts.
    b.stop().await.unwrap();
    let status = a.cluster_status().await.unwrap();
    let b_row = status.nodes.iter().find(|n| n.name == "b").unwrap();
    assert!(!b_row.live && b_row.stopped_at.is_some());
    assert_eq!(status.majority_hash, None, "one h1 and one h2: no majority");
    a.stop().await.unwrap();
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_what_is_older() {
    let Some(t) = TestDb::new().await else { return };
    let db = t.db().await;
    let now = Utc::now();
    db.insert_rows(
        "a",
        &[
            row("s", "old", "cycle", now - TimeDelta::days(40), Status::Ok),
            row("s", "new", "cycle", now - TimeDelta::days(2), Status::Ok),
        ],
    )
    .await
    .unwrap();
    db.claim("a", "x", LEASE, at(0), &[due("s", at(0)), due("t", at(0))])
        .await
        .unwrap();
    db.execute_raw(
        "UPDATE claims SET claimed_at = now() - interval '40 days', state = 'done'
         WHERE schedule = 's';
         UPDATE claims SET claimed_at = now() - interval '40 days' WHERE schedule = 't'",
    )
    .await
    .unwrap();
    let gone = db
        .retain(Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!((gone.claims, gone.rows), (1, 1));
    assert_eq!(
        count(&db, "SELECT count(*) FROM timing_rows WHERE cycle = 'new'").await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM claims WHERE schedule = 't'").await,
        1,
        "a running claim is never deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_a_live_name_and_frees_an_expired_one() {
    let Some(t) = TestDb::new().await else { return };
    let db = t.db().await;
    assert_eq!(
        db.register(&dead_node_registration("x")).await.unwrap(),
        Registered::Ok { expired_claims: 0 }
    );
    let mut other = dead_node_registration("x");
    other.instance_id = "other";
    other.session = "other-session";
    assert!(matches!(
        db.register(&other).await.unwrap(),
        Registered::Taken { .. }
    ));
    // The first one's heartbeat ages past its lease (500 ms): the name is free.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(
        db.register(&other).await.unwrap(),
        Registered::Ok { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_never_show_the_password() {
    // A port nothing listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = PgUrl::parse(&format!(
        "postgres://app:Sup3rSecret@127.0.0.1:{port}/loop?sslmode=disable"
    ))
    .unwrap();
    let err = Db::connect(&url, LEASE).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("Sup3rSecret"), "{shown}");
    assert!(shown.contains("app:***@127.0.0.1"), "{shown}");
    // A node started with the database away comes up Down, not failed, and says so.
    let mut settings = Settings::new(url, "a", "i");
    settings.lease = LEASE;
    let (node, _events) = Node::start(settings).await.unwrap();
    let state = node.state();
    assert!(matches!(state.link, Link::Down { .. }));
    assert!(!format!("{state:?} {}", state.line()).contains("Sup3rSecret"));
    assert!(matches!(
        node.claim(at(0), &[due("s", at(0))]).await,
        Err(ClusterError::Unavailable(_))
    ));
}

/// The cluster section of schedules.json: problems named by file:line:column, like every
/// other field, and never the URL's password.
#[test]
fn cluster_section_problems_name_file_line_and_column() {
    let instance = |cluster: &str| {
        let inst = common::Instance {
            dir: tempfile::tempdir().unwrap(),
        };
        inst.write(
            "schedules.json",
            &format!(
                "{{\n  \"version\": 1,\n  \"cluster\": {cluster},\n  \"schedules\": [\n    {{ \"id\": \"x\", \"task\": \"t\", \"modes\": [\"a\"] }}\n  ]\n}}\n"
            ),
        );
        inst.write("modes/a.md", "+++\ncommand = [\"true\"]\n+++\n# a\n");
        inst
    };
    let column = |inst: &common::Instance, needle: &str| {
        inst.read("schedules.json")
            .lines()
            .nth(2)
            .unwrap()
            .find(needle)
            .unwrap()
            + 1
    };

    let unknown = instance(r#"{ "postgres": "postgres://u@h/d", "lese": "30s" }"#);
    let out = unknown.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let expected = format!(
        "schedules.json:3:{}: unknown field \"lese\" (expected one of: postgres, node, lease, retention)",
        column(&unknown, "\"lese\"")
    );
    assert!(
        common::text(&out).contains(&expected),
        "{expected}\n{}",
        common::text(&out)
    );

    let bad = instance(
        r#"{ "postgres": "postgres://u:Sup3rSecret@h/d?sslmode=sometimes", "node": "a b", "lease": "1s", "retention": "2h" }"#,
    );
    let out = bad.run(&["validate"]);
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for (needle, message) in [
        ("\"postgres://", "unknown sslmode \"sometimes\""),
        ("\"a b\"", "node name \"a b\" is not valid"),
        ("\"1s\"", "lease 1s is out of range"),
        ("\"2h\"", "retention 2h is shorter than a day"),
    ] {
        let expected = format!("schedules.json:3:{}: {message}", column(&bad, needle));
        assert!(text.contains(&expected), "{expected}\n{text}");
    }
    assert!(!text.contains("Sup3rSecret"), "{text}");

    let good = instance(r#"{ "node": "a", "lease": "30s" }"#);
    let out = good.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
}

/// TLS through rustls with libpq's `sslmode` meanings, against the server's own certificate
/// (asked of the server: `SHOW ssl_cert_file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_over_rustls() {
    let Some(t) = TestDb::new().await else { return };
    let plain = t.db().await;
    let setting = |name: &'static str| {
        let plain = &plain;
        async move {
            let rows = plain.query_raw(&format!("SHOW {name}")).await.unwrap();
            rows[0].get::<_, String>(0)
        }
    };
    if setting("ssl").await != "on" {
        eprintln!("skipped: the server named by {ENV} does not offer TLS (ssl = off)");
        return;
    }
    let cert = setting("ssl_cert_file").await;
    if std::fs::read(&cert).is_err() {
        eprintln!("skipped: the server's certificate {cert} is not readable here");
        return;
    }
    let upstream = t.upstream();
    let url = |host: &str, query: &str| {
        PgUrl::parse(&format!(
            "postgres://postgres@{host}:{}/{}?hostaddr={}&{query}",
            upstream.port(),
            t.name,
            upstream.ip()
        ))
        .unwrap()
    };
    let encrypted = |db: Db| async move {
        db.query_raw("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap()[0]
            .get::<_, bool>(0)
    };
    let ip = upstream.ip().to_string();
    let root = format!("sslrootcert={}", cert.replace('/', "%2F"));

    let db = Db::connect(&url(&ip, "sslmode=disable"), LEASE)
        .await
        .unwrap();
    assert!(!encrypted(db).await, "disable: plain");
    let db = Db::connect(&url(&ip, "sslmode=require"), LEASE)
        .await
        .unwrap();
    assert!(
        encrypted(db).await,
        "require: encrypted, certificate not verified"
    );
    let err = Db::connect(&url(&ip, "sslmode=verify-full"), LEASE)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "verify-full with the public roots refuses a private certificate: {err}"
    );
    // A name the certificate holds, for verify-full (hostaddr connects, the name is only
    // checked): Debian's generated certificate names the host it was made on.
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = ["localhost", host.trim()]
        .into_iter()
        .filter(|n| !n.is_empty())
        .find(|n| der.windows(n.len()).any(|w| w == n.as_bytes()));
    let db = Db::connect(&url(&ip, &format!("sslmode=verify-ca&{root}")), LEASE).await;
    match db {
        Ok(db) => assert!(encrypted(db).await, "verify-ca: the chain, not the name"),
        Err(err) => panic!("verify-ca with the server's own certificate as root: {err}"),
    }
    let err = Db::connect(&url(&ip, &format!("sslmode=verify-full&{root}")), LEASE)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "verify-full checks the name ({ip} is not in the certificate): {err}"
    );
    if let Some(name) = name {
        let db = Db::connect(&url(name, &format!("sslmode=verify-full&{root}")), LEASE)
            .await
            .unwrap();
        assert!(encrypted(db).await, "verify-full: chain and name");
    }
}

/// Nodes that say the same about schedules hash the same, whatever their cluster sections.
#[test]
fn the_schedules_hash_ignores_the_cluster_section() {
    let load = |cluster: &str, cron: &str| {
        let inst = common::Instance {
            dir: tempfile::tempdir().unwrap(),
        };
        inst.write(
            "schedules.json",
            &format!(
                "{{ \"version\": 1, {cluster} \"schedules\": [ {{ \"id\": \"x\", \"task\": \"t\", \"modes\": [\"a\"], \"cron\": \"{cron}\" }} ] }}"
            ),
        );
        inst.write("modes/a.md", "+++\ncommand = [\"true\"]\n+++\n# a\n");
        let config = loop_orchestrator::config::Config::load(inst.path()).unwrap();
        loop_orchestrator::cluster::schedules_hash(&config.schedules)
    };
    let a = load(r#""cluster": { "node": "a" },"#, "0 * * * *");
    let b = load(
        r#""cluster": { "node": "b", "lease": "45s" },"#,
        "0 * * * *",
    );
    let plain = load("", "0 * * * *");
    let other = load(r#""cluster": { "node": "a" },"#, "5 * * * *");
    assert_eq!(a, b);
    assert_eq!(a, plain);
    assert_ne!(a, other);
    assert_eq!(a.len(), 32);
}
