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
//! - at most [`MAX_CONCURRENT_REQUESTS`] requests are handled at once; the others wait.

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
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard))
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .with_state(metrics)
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

async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(ACCEPT).and_then(|v| v.to_str().ok()));
    // Encoding is CPU work of a few milliseconds and one read of the bounded memory file:
    // done in place rather than on the blocking pool.
    let body = metrics.encode(format);
    ([(CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.health().liveness(chrono::Utc::now()) {
        Ok(()) => plain(StatusCode::OK, "ok: the scheduler loop is alive\n".into()),
        Err(why) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> Response {
    if metrics.health().is_ready() {
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

/// The read-only page at `/`.
// TODO(report): serve the `report` module's HTML page of the last 24 hours here, built from
// task_timing.tsv on the blocking pool, once that module is part of the crate; until then a
// page that says where to look.
async fn dashboard(State(metrics): State<Arc<Metrics>>) -> Html<String> {
    let dir = metrics.instance().root().display().to_string();
    let dir = dir
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loop-orchestrator</title></head><body>\n\
         <h1>loop-orchestrator</h1>\n<p>Instance <code>{dir}</code>, version {}.</p>\n\
         <ul><li><a href=\"/metrics\">/metrics</a> (Prometheus)</li>\
         <li><a href=\"/healthz\">/healthz</a></li><li><a href=\"/readyz\">/readyz</a></li></ul>\n\
         <p>For the history of cycles, run <code>loop-orchestrator status</code>.</p>\n\
         </body></html>\n",
        env!("CARGO_PKG_VERSION")
    ))
}
