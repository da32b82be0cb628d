//! `mcp`: the MCP server's command line (SPEC §9); the server itself is [`crate::mcp`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::exit::{Code, Error};
use crate::instance::Instance;
use crate::mcp;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio (loopback addresses only,
    /// unless --allow-remote). A bearer token in LOOP_ORCHESTRATOR_MCP_TOKEN is then required
    /// on every request.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Listen on addresses other than loopback; requires LOOP_ORCHESTRATOR_MCP_TOKEN. Use TLS
    /// (--tls-cert and --tls-key, or a reverse proxy).
    #[arg(long, requires = "http")]
    pub allow_remote: bool,
    /// Another name clients reach the server by (a DNS name, a proxy's); repeatable.
    #[arg(long, value_name = "HOST", requires = "http")]
    pub allowed_host: Vec<String>,
    /// A browser origin allowed to call the server (https://app.example:443); repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "http")]
    pub allowed_origin: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

pub fn run(inst: &Instance, args: McpArgs) -> Result<Code, Error> {
    if args.http.is_none() {
        return mcp::serve_stdio(inst);
    }
    let token = match std::env::var(mcp::TOKEN_ENV) {
        Ok(token) => Some(token),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::Invalid(format!(
                "{} is not valid UTF-8",
                mcp::TOKEN_ENV
            )));
        }
    };
    mcp::serve_http(
        inst,
        mcp::HttpOptions {
            addr: args.http,
            allow_remote: args.allow_remote,
            token,
            allowed_hosts: args.allowed_host,
            allowed_origins: args.allowed_origin,
            tls: args.tls_cert.zip(args.tls_key),
        },
    )
}
