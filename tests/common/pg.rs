//! A PostgreSQL database of a test's own and a TCP proxy that can cut a node off it, for
//! tests that run `serve` processes as cluster nodes. Synchronous on the outside: each owns
//! a small runtime, so a test drives processes with plain threads and sleeps.
//!
//! The server is named by `LOOP_TEST_POSTGRES`; without it [`TestDb::new`] says so and the
//! test passes, unless `LOOP_TEST_REQUIRE_ALL` is set (CI), where a skip would hide a
//! failure.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub const ENV: &str = "LOOP_TEST_POSTGRES";

/// A database `lo_test_<random>` created on the server, dropped with the value.
pub struct TestDb {
    admin: String,
    pub name: String,
    /// The database's URL.
    pub url: String,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

impl TestDb {
    pub fn new() -> Option<TestDb> {
        let Ok(admin) = std::env::var(ENV) else {
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
        let rt = runtime();
        rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|err| panic!("{ENV} names a server that does not answer: {err}"));
            tokio::spawn(connection);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create the test database");
        });
        let url = with_db(&admin, &name);
        Some(TestDb {
            admin,
            name,
            url,
            rt,
        })
    }

    /// Runs `sql` on the test database and returns its rows.
    pub fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(connection);
            client.query(sql, &[]).await.expect("query")
        })
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0].get(0)
    }

    /// The server's address, for a proxy in front of it.
    pub fn upstream(&self) -> SocketAddr {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) if host == "localhost" => "127.0.0.1".into(),
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("{ENV} must name a TCP host for the proxy tests, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
            .parse()
            .expect("numeric host in the test URL")
    }

    /// The test database's URL through `proxy`.
    pub fn via(&self, proxy: &Proxy) -> String {
        let config: tokio_postgres::Config = self.url.parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!(
            "postgres://{user}{password}@127.0.0.1:{}/{}?sslmode=disable",
            proxy.port, self.name
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        self.rt.block_on(async move {
            if let Ok((client, connection)) =
                tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        });
    }
}

pub fn with_db(url: &str, name: &str) -> String {
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

/// A TCP proxy in front of the server: [`Proxy::cut`] closes every connection and stops
/// listening (a node cut off the database), [`Proxy::restore`] listens again on the same
/// port.
pub struct Proxy {
    pub port: u16,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    rt: tokio::runtime::Runtime,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy");
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
            rt,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let tasks = self.tasks.clone();
        let accept = self.rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let pipe = tokio::spawn(async move {
                    let (mut client, mut server) = (client, server);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    let _ = client.shutdown().await;
                });
                tasks.lock().unwrap().push(pipe.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes every connection and stops listening.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub fn restore(&self) {
        for _ in 0..250 {
            if let Ok(listener) = self
                .rt
                .block_on(TcpListener::bind(("127.0.0.1", self.port)))
            {
                self.serve(listener);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("cannot listen on the proxy's port {} again", self.port);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
