//! Streamable HTTP (SPEC §9): the MCP endpoint at `/mcp`, rmcp's tower service mounted in an
//! axum router, behind one layer that checks `Host`, `Origin` and the bearer token.
//!
//! Rules (the SDK leaves these to the server: its Origin check is off until enabled and it
//! has no token check, so they are all here, in one place, before any request reaches it):
//! - `Host` must name this server: a loopback name, the address it listens on, this
//!   machine's hostname when it listens on every address, or a `--allowed-host`. Anything
//!   else is 403: a page whose name was rebound to this address (DNS rebinding) sends its
//!   own name.
//! - `Origin`, when present, must be the server's own (`http://<allowed host>:<port>`, or
//!   `https://` with `--tls-cert`) or an
//!   `--allowed-origin`; anything else, `null` included, is 403. Clients that are not
//!   browsers send none.
//! - When a token is configured (`LOOP_ORCHESTRATOR_MCP_TOKEN`) every request needs
//!   `Authorization: Bearer <token>`, compared in constant time (only the length can show);
//!   otherwise 401 with `WWW-Authenticate: Bearer`.
//! - Only loopback addresses are served unless `--allow-remote`, which requires the token.
//!
//! Sessions are rmcp's: each client that initializes gets its own (`Mcp-Session-Id`) and its
//! own [`LoopServer`]; all of them share the instance, the stop signal and the cycle tracker.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq;

use super::server::{LoopServer, Shared};
use crate::exit::Error;

/// The path of the MCP endpoint.
pub const PATH: &str = "/mcp";
/// How long a session may go without a message before rmcp ends it.
pub const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(24 * 3_600);
/// The environment variable that holds the bearer token.
pub const TOKEN_ENV: &str = "LOOP_ORCHESTRATOR_MCP_TOKEN";

/// How the HTTP server may be reached.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    pub addr: Option<SocketAddr>,
    /// Listen on addresses other than loopback (requires `token`).
    pub allow_remote: bool,
    pub token: Option<String>,
    /// More names the server may be reached by (behind a proxy, a DNS name).
    pub allowed_hosts: Vec<String>,
    /// More origins allowed to call it from a browser (`https://app.example:443`).
    pub allowed_origins: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain and PEM private key.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Who may call: the checks of the layer, fixed once the listening address is known.
#[derive(Clone)]
pub struct Access {
    hosts: Vec<String>,
    origins: Vec<Origin>,
    token: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("hosts", &self.hosts)
            .field("origins", &self.origins)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A scheme, host and port, as RFC 6454 compares origins.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let uri: axum::http::Uri = text.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return None;
        }
        Some(Origin {
            host: bare_host(uri.host()?),
            port: uri.port_u16().unwrap_or(default),
            scheme,
        })
    }
}

/// A host as compared: lower case, IPv6 without brackets.
fn bare_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl Access {
    /// The checks for a server listening on `local` (the bound address, so port 0 has become
    /// the real port).
    pub fn new(local: SocketAddr, options: &HttpOptions) -> Result<Access, Error> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let ip = local.ip();
        if ip.is_unspecified() {
            if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                hosts.push(name.trim().to_string());
            }
        } else {
            hosts.push(ip.to_string());
        }
        hosts.extend(options.allowed_hosts.iter().map(|h| bare_host(h)));
        hosts.retain(|h| !h.is_empty());
        hosts.sort();
        hosts.dedup();
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut origins: Vec<Origin> = hosts
            .iter()
            .map(|host| Origin {
                scheme: scheme.into(),
                host: host.clone(),
                port: local.port(),
            })
            .collect();
        for text in &options.allowed_origins {
            origins.push(Origin::parse(text).ok_or_else(|| {
                Error::Invalid(format!(
                    "--allowed-origin {text:?}: expected scheme://host[:port], such as https://app.example.com"
                ))
            })?);
        }
        Ok(Access {
            hosts,
            origins,
            token: options.token.clone(),
        })
    }

    /// `Ok` when the request may go on, else why not.
    fn check(&self, headers: &HeaderMap, authority: Option<&str>) -> Result<(), Refused> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority);
        let host_ok = host
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .is_some_and(|a| self.hosts.contains(&bare_host(a.host())));
        if !host_ok {
            tracing::warn!(host = ?host, "refused: Host is not this server's");
            return Err(Refused::forbidden(
                "Host is not one of this server's names (add one with --allowed-host)",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let allowed = origin
                .to_str()
                .ok()
                .and_then(Origin::parse)
                .is_some_and(|o| self.origins.contains(&o));
            if !allowed {
                tracing::warn!(origin = ?origin, "refused: foreign Origin");
                return Err(Refused::forbidden(
                    "Origin is not this server's (add one with --allowed-origin)",
                ));
            }
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, credentials) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| credentials.trim())
                });
            let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            if !ok {
                tracing::warn!(
                    given = given.is_some(),
                    "refused: missing or wrong bearer token"
                );
                return Err(Refused {
                    status: StatusCode::UNAUTHORIZED,
                    message: "a bearer token is required: Authorization: Bearer <LOOP_ORCHESTRATOR_MCP_TOKEN>",
                    challenge: Some(if given.is_some() {
                        r#"Bearer realm="loop-orchestrator", error="invalid_token""#
                    } else {
                        r#"Bearer realm="loop-orchestrator""#
                    }),
                });
            }
        }
        Ok(())
    }
}

/// A request the layer answers itself.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    message: &'static str,
    /// `WWW-Authenticate`, for a 401.
    challenge: Option<&'static str>,
}

impl Refused {
    fn forbidden(message: &'static str) -> Refused {
        Refused {
            status: StatusCode::FORBIDDEN,
            message,
            challenge: None,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    match access.check(request.headers(), authority.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The MCP endpoint at [`PATH`] behind the access layer. More routes (metrics) can be merged
/// into the result; the layer guards only the routes here.
pub fn router(shared: Arc<Shared>, access: Access) -> axum::Router {
    // Host and Origin are the layer's: rmcp's own Host list is turned off so that one list,
    // the layer's, decides (with rmcp's default a remote name would be refused twice over).
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(shared.stop.child_token());
    // rmcp ends a session after `keep_alive` without a message on it, even while a request
    // of that session is in flight; a mode may run for an hour without a word, so the idle
    // limit is a day rather than rmcp's 5 minutes (a session whose client vanished without
    // a DELETE is a task and a few kilobytes until then).
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE);
    let service = StreamableHttpService::new(
        {
            let shared = shared.clone();
            move || Ok(LoopServer::new(shared.clone()))
        },
        Arc::new(sessions),
        config,
    );
    axum::Router::new()
        .route_service(PATH, service)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            guard,
        ))
}

/// Checks the options against the address before anything listens: loopback only unless
/// remote use is allowed, and remote use only with a token.
pub fn check_options(options: &HttpOptions) -> Result<SocketAddr, Error> {
    let addr = options
        .addr
        .ok_or_else(|| Error::Invalid("--http needs an address, such as 127.0.0.1:8765".into()))?;
    if let Some(token) = &options.token
        && token.trim().is_empty()
    {
        return Err(Error::Invalid(format!(
            "{TOKEN_ENV} is set but empty: set a long random token, or unset it"
        )));
    }
    if !addr.ip().is_loopback() && !options.allow_remote {
        return Err(Error::Invalid(format!(
            "--http {addr}: not a loopback address; the MCP server can run cycles and edit files, so it serves this machine only unless --allow-remote (which requires {TOKEN_ENV})"
        )));
    }
    if options.allow_remote && options.token.is_none() {
        return Err(Error::Invalid(format!(
            "--allow-remote requires a bearer token: set {TOKEN_ENV} (every request must then send Authorization: Bearer <token>)"
        )));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>) -> Access {
        Access::new(
            "127.0.0.1:8765".parse().unwrap(),
            &HttpOptions {
                token: token.map(String::from),
                allowed_hosts: vec!["Loop.Example".into()],
                ..HttpOptions::default()
            },
        )
        .unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn status(access: &Access, pairs: &[(header::HeaderName, &str)]) -> Option<StatusCode> {
        access.check(&headers(pairs), None).err().map(|r| r.status)
    }

    #[test]
    fn host_and_origin_must_be_the_servers_own() {
        let a = access(None);
        assert_eq!(status(&a, &[(header::HOST, "127.0.0.1:8765")]), None);
        assert_eq!(status(&a, &[(header::HOST, "localhost:8765")]), None);
        assert_eq!(status(&a, &[(header::HOST, "[::1]:8765")]), None);
        assert_eq!(status(&a, &[(header::HOST, "loop.example")]), None);
        assert_eq!(
            status(&a, &[(header::HOST, "evil.example:8765")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(&a, &[]), Some(StatusCode::FORBIDDEN));
        let host = (header::HOST, "127.0.0.1:8765");
        for ok in [
            "http://127.0.0.1:8765",
            "http://localhost:8765",
            "http://[::1]:8765",
        ] {
            assert_eq!(
                status(&a, &[host.clone(), (header::ORIGIN, ok)]),
                None,
                "{ok}"
            );
        }
        for bad in [
            "http://evil.example:8765",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8765",
            "null",
            "garbage",
        ] {
            assert_eq!(
                status(&a, &[host.clone(), (header::ORIGIN, bad)]),
                Some(StatusCode::FORBIDDEN),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_is_required_on_every_request_when_set() {
        let a = access(Some("s3cret"));
        let host = (header::HOST, "127.0.0.1:8765");
        assert_eq!(
            status(&a, std::slice::from_ref(&host)),
            Some(StatusCode::UNAUTHORIZED)
        );
        for wrong in ["Bearer s3cre", "Bearer s3cret!", "Basic s3cret", "s3cret"] {
            assert_eq!(
                status(&a, &[host.clone(), (header::AUTHORIZATION, wrong)]),
                Some(StatusCode::UNAUTHORIZED),
                "{wrong}"
            );
        }
        assert_eq!(
            status(
                &a,
                &[host.clone(), (header::AUTHORIZATION, "bearer s3cret")]
            ),
            None
        );
        let refused = a
            .check(&headers(&[host]), None)
            .unwrap_err()
            .into_response();
        assert!(
            refused.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }

    #[test]
    fn remote_addresses_need_the_flag_and_the_flag_needs_a_token() {
        let options = |addr: &str, allow_remote, token: Option<&str>| HttpOptions {
            addr: Some(addr.parse().unwrap()),
            allow_remote,
            token: token.map(String::from),
            ..HttpOptions::default()
        };
        assert!(check_options(&options("127.0.0.1:1", false, None)).is_ok());
        assert!(check_options(&options("[::1]:1", false, None)).is_ok());
        let err = check_options(&options("0.0.0.0:1", false, None)).unwrap_err();
        assert!(err.to_string().contains("--allow-remote"), "{err}");
        let err = check_options(&options("0.0.0.0:1", true, None)).unwrap_err();
        assert!(err.to_string().contains(TOKEN_ENV), "{err}");
        assert!(check_options(&options("0.0.0.0:1", true, Some("t"))).is_ok());
        assert!(check_options(&options("127.0.0.1:1", false, Some(" "))).is_err());
    }
}
