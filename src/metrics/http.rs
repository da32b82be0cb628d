//! The metrics address: `/metrics`, `/healthz`, `/readyz` and a read-only page at `/`, as
//! an axum [`router`] that another router can merge, served by hyper on a thread of its own
//! ([`spawn`]).
//!
//! Rules, so that HTTP clients cannot disturb the scheduler:
//! - never on the scheduler loop's thread, and not on the cycles' worker runtime either:
//!   there a scrape waited behind the cycles' tasks (100–500 ms at 1,000 schedules a
//!   second, BENCHMARKS.md figure 10), as the loop's timer once did (figure 1); on a
//!   current-thread runtime of its own it takes what encoding takes;
//! - loopback addresses only, unless the operator allows others ([`bind`]): nothing here
//!   is authenticated;
//! - at most [`MAX_CONNECTIONS`] connections; one more is accepted and closed at once, so
//!   a flood costs neither file descriptors (the service's children need them) nor a queue
//!   that a real scrape would wait behind;
//! - a connection must send a request's headers within [`HEADER_TIMEOUT`] (an idle
//!   keep-alive connection too) and lives at most [`MAX_CONNECTION_AGE`]; headers are
//!   capped at [`MAX_HEADER_BYTES`]; garbage gets hyper's 400 and the connection closes;
//! - at most [`MAX_CONCURRENT_REQUESTS`] requests are handled at once; the others wait;
//!   the page at `/` (the `report` of the last [`PAGE_WINDOW`], read from task_timing.tsv
//!   on the blocking pool: about a second for a million rows) is built one at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;

use super::{Format, Metrics};

pub const MAX_CONNECTIONS: usize = 128;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_CONCURRENT_REQUESTS: usize = 8;
/// The period the page at `/` reports on.
pub const PAGE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What the handlers share.
struct Site {
    metrics: Arc<Metrics>,
    /// One page is built at a time: each reads the whole timing file.
    page: Semaphore,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "metrics address {addr} is not a loopback address; the metrics, health and dashboard are not authenticated, so serving them to other hosts needs --metrics-allow-remote"
    )]
    Remote { addr: SocketAddr },
    #[error("metrics address {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the metrics address now, so that a refused address is an error before the service
/// reports ready.
pub fn bind(addr: SocketAddr, allow_remote: bool) -> Result<std::net::TcpListener, BindError> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(BindError::Remote { addr });
    }
    let io = |source| BindError::Io { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// The routes, with their state; merge it with another router to serve both on one address.
pub fn router(metrics: Arc<Metrics>) -> Router {
    let site = Arc::new(Site {
        metrics,
        page: Semaphore::new(1),
    });
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(page))
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .with_state(site)
}

/// Serves `router` on `listener` from a thread of its own, with a current-thread runtime,
/// for the life of the process.
pub fn spawn(listener: std::net::TcpListener, router: Router) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || runtime.block_on(serve(listener, router)))?;
    Ok(())
}

/// Accepts connections on `listener` until the runtime shuts down. Must run on a runtime
/// other than the scheduler loop's.
pub async fn serve(listener: std::net::TcpListener, router: Router) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "metrics: cannot listen");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait for some to be freed.
                tracing::warn!(error = %err, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_TIMEOUT, connection).await;
                }
            }
            drop(permit);
        });
    }
}

async fn scrape(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    let metrics = &site.metrics;
    let format = Format::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // Encoding is CPU work of a few milliseconds and one read of the bounded memory file:
    // done in place rather than on the blocking pool.
    let body = metrics.encode(format);
    ([(CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn healthz(State(site): State<Arc<Site>>) -> Response {
    match site.metrics.health().liveness(chrono::Utc::now()) {
        Ok(()) => plain(StatusCode::OK, "ok: the scheduler loop is alive\n".into()),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(site): State<Arc<Site>>) -> Response {
    if site.metrics.health().is_ready() {
        plain(StatusCode::OK, "ready\n".into())
    } else {
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or stopping\n".into(),
        )
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The read-only page at `/`: the report of the last [`PAGE_WINDOW`], as `report --html`
/// writes it.
async fn page(State(site): State<Arc<Site>>) -> Response {
    let Ok(_turn) = site.page.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    let metrics = Arc::clone(&site.metrics);
    let built = tokio::task::spawn_blocking(move || {
        let now = chrono::Utc::now();
        let options = crate::report::Options {
            since: now - PAGE_WINDOW,
            schedule: None,
            budgets: metrics.budgets(),
        };
        crate::report::build_file(&metrics.instance().timing(), &options, now)
            .map(|report| crate::report::html::render(&report))
    })
    .await;
    match built {
        Ok(Ok(html)) => Html(html).into_response(),
        Ok(Err(err)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the timing file: {err}\n"),
        ),
        Err(err) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the report failed: {err}\n"),
        ),
    }
}
