//! The MCP server (SPEC §9): agents and editors see and steer the loop over the Model Context
//! Protocol, on stdio (`loop-orchestrator mcp`) or Streamable HTTP (`mcp --http ADDR`), built
//! on rmcp, the official Rust SDK (no JSON-RPC is written here).
//!
//! Rules:
//! - Everything a tool, resource or prompt does is one call into [`crate::app`], the code the
//!   CLI runs: the same locks, validation and pruning. This module parses arguments and
//!   renders results, nothing more (`server` tools, `resources`, `prompts`, `args` decoding,
//!   `text` renderings, `http` the axum router and its access layer).
//! - Bad input never ends the server: a tool's failure is a tool result with `isError` and
//!   the reason; a request the protocol cannot route gets a JSON-RPC error (or an HTTP 4xx).
//! - On stdio, stdout carries protocol messages only: the protocol gets its own descriptor
//!   and descriptor 1 is pointed at stderr before anything runs, so no log line, stray print
//!   or child process (mode, `on_escalate`) can write into the stream. Logs go to stderr.
//! - A stop (SIGTERM, SIGINT, the client closing stdio) cancels running cycles as SIGTERM
//!   stops `run-cycle` (rows `interrupted`) and waits for their rows before exiting 0.

pub mod args;
mod http;
mod prompts;
mod resources;
mod server;
mod text;
mod tls;

use std::sync::Arc;

use rmcp::ServiceExt;

pub use http::{Access, HttpOptions, PATH, TOKEN_ENV, check_options, router};
pub use server::{LoopServer, MAX_MEMORY_TEXT, Shared};

use crate::exit::{Code, Error};
use crate::instance::Instance;

/// How long running cycles get to write their rows after a stop before the process exits.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Failed(format!("mcp: cannot start the runtime: {err}")))
}

/// Serves MCP on stdin/stdout until the client closes stdin or a signal arrives.
pub fn serve_stdio(inst: &Instance) -> Result<Code, Error> {
    let protocol_out = take_stdout()?;
    let rt = runtime()?;
    let shared = Arc::new(Shared::new(inst.clone()));
    let result = rt.block_on(async {
        let (reader, writer) = stdio_transport(protocol_out)?;
        let service = LoopServer::new(shared.clone())
            .serve((reader, writer))
            .await
            .map_err(|err| Error::Failed(format!("mcp: the session did not start: {err}")))?;
        let stop = service.cancellation_token();
        tokio::select! {
            quit = service.waiting() => {
                tracing::info!(reason = ?quit, "mcp: the client closed the session");
            }
            () = signalled() => {
                tracing::info!("mcp: signal received: stopping");
                stop.cancel();
            }
        }
        finish(&shared).await;
        Ok(Code::OK)
    });
    // A read of stdin on the blocking pool cannot be cancelled; do not wait for it.
    rt.shutdown_background();
    result
}

/// Serves MCP over Streamable HTTP (HTTPS with `tls`) until a signal arrives.
pub fn serve_http(inst: &Instance, options: HttpOptions) -> Result<Code, Error> {
    let addr = check_options(&options)?;
    // Bad certificate files are invalid input, found before anything listens.
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    if options.allow_remote && acceptor.is_none() {
        eprintln!(
            "warning: --allow-remote without --tls-cert serves plain HTTP: use TLS (--tls-cert and --tls-key, or a reverse proxy), or the token and every result cross the network in clear text"
        );
    }
    let rt = runtime()?;
    let shared = Arc::new(Shared::new(inst.clone()));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|err| Error::Failed(format!("--http {addr}: cannot listen: {err}")))?;
        let local = listener.local_addr().map_err(Error::failed)?;
        let access = Access::new(local, &options)?;
        tracing::debug!(?access, "mcp: access rules");
        let app = router(shared.clone(), access);
        let stopping = shared.stop.clone();
        let stop = async move {
            signalled().await;
            tracing::info!("mcp: signal received: stopping");
            stopping.cancel();
        };
        // The one line a supervisor (or a test) reads to learn the port.
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        eprintln!("mcp: serving {scheme}://{local}{PATH}");
        let served = match acceptor {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor).map_err(Error::failed)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        };
        served.map_err(|err| Error::Failed(format!("mcp: the HTTP server failed: {err}")))?;
        finish(&shared).await;
        Ok(Code::OK)
    })
}

/// Stops running cycles (rows `interrupted`) and waits for them.
async fn finish(shared: &Shared) {
    shared.stop.cancel();
    shared.cycles.close();
    if tokio::time::timeout(STOP_WAIT, shared.cycles.wait())
        .await
        .is_err()
    {
        tracing::error!("mcp: cycles still running after {STOP_WAIT:?}; exiting anyway");
    }
}

async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Gives the protocol a descriptor of its own (a close-on-exec copy of stdout) and points
/// descriptor 1 at stderr, so nothing but the protocol writer can reach the client.
fn take_stdout() -> Result<std::os::fd::OwnedFd, Error> {
    use std::os::fd::AsFd;
    let cannot = |err: &dyn std::fmt::Display| {
        Error::Failed(format!("mcp: cannot set up stdout for the protocol: {err}"))
    };
    let protocol = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|err| cannot(&err))?;
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(|err| cannot(&err))?;
    Ok(protocol)
}

type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// The protocol's reader (stdin) and writer (the descriptor [`take_stdout`] kept). Pipes, as
/// clients start servers, are reopened non-blocking on descriptions of their own (as rmcp's
/// `stdio_pipes` does for descriptors 0 and 1) and driven by the reactor; anything else goes
/// through tokio's blocking-pool handles.
fn stdio_transport(out: std::os::fd::OwnedFd) -> Result<(Reader, Writer), Error> {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let is_fifo = |fd: &OwnedFd| {
        fd.try_clone()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.file_type().is_fifo())
    };
    let reopen = |fd: i32, write: bool| -> Option<OwnedFd> {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{fd}"))
            .ok()
            .map(OwnedFd::from)
    };
    let reader: Reader = match reopen(std::io::stdin().as_raw_fd(), false)
        .filter(is_fifo)
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
    {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::io::stdin()),
    };
    let writer: Writer = match reopen(out.as_raw_fd(), true)
        .filter(is_fifo)
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok())
    {
        Some(pipe) => Box::new(pipe),
        None => Box::new(tokio::fs::File::from_std(std::fs::File::from(out))),
    };
    Ok((reader, writer))
}
