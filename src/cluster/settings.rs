//! The `cluster` section of schedules.json, the PostgreSQL URL it names, and what a node is
//! started with ([`Settings`]).
//!
//! Rules:
//! - `LOOP_ORCHESTRATOR_POSTGRES` wins over `cluster.postgres`, so the password need not sit
//!   in a file that agents edit; `LOOP_ORCHESTRATOR_NODE` wins over `cluster.node`, so hosts
//!   can share one schedules.json (the default name is the host name).
//! - The URL is never shown with its password: [`PgUrl`]'s `Display` and `Debug` render it
//!   from its parsed parts with the password replaced by `***` (a `password=` parameter
//!   too), and [`ClusterConfig`]'s `Debug` shows only that rendering.
//! - Only `postgres://` and `postgresql://` URLs are accepted (libpq's URI form,
//!   <https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING>).
//!   `sslmode` and `sslrootcert` are read here with libpq's meaning, since tokio-postgres
//!   knows only `disable`/`prefer`/`require` and verifies nothing itself; every other
//!   parameter is tokio-postgres's to parse.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;

pub const POSTGRES_ENV: &str = "LOOP_ORCHESTRATOR_POSTGRES";
pub const NODE_ENV: &str = "LOOP_ORCHESTRATOR_NODE";
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Renewals run every lease/3 and TCP timeouts count whole seconds: below 3 s the timings
/// the failure cases rely on (module doc of `cluster`) cannot be set.
pub const MIN_LEASE: Duration = Duration::from_secs(3);
pub const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Rows the outbox holds while the database is away (`cluster::node`).
pub const DEFAULT_OUTBOX: usize = 10_000;

/// `"cluster": {"postgres": URL, "node": NAME, "lease": "30s", "retention": "30d"}`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// May be left out when `LOOP_ORCHESTRATOR_POSTGRES` is set.
    #[serde(default)]
    pub postgres: Option<String>,
    /// Default: `LOOP_ORCHESTRATOR_NODE`, else the host name.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default = "default_lease")]
    pub lease: HumanDuration,
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
}

fn default_lease() -> HumanDuration {
    HumanDuration(DEFAULT_LEASE)
}

fn default_retention() -> HumanDuration {
    HumanDuration(DEFAULT_RETENTION)
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field(
                "postgres",
                &self
                    .postgres
                    .as_deref()
                    .map(|url| PgUrl::parse(url).map_or("<invalid URL>".into(), |u| u.to_string())),
            )
            .field("node", &self.node)
            .field("lease", &self.lease.0)
            .field("retention", &self.retention.0)
            .finish()
    }
}

impl ClusterConfig {
    /// What the types cannot judge, as (field, message) for the caller to place in the file.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(url) = &self.postgres
            && let Err(err) = PgUrl::parse(url)
        {
            problems.push(("postgres", err.to_string()));
        }
        if let Some(node) = &self.node
            && let Err(message) = check_node_name(node)
        {
            problems.push(("node", message));
        }
        let lease = self.lease.0;
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            problems.push((
                "lease",
                format!(
                    "lease {} is out of range (expected {} to {}; 30s suits most clusters)",
                    self.lease,
                    HumanDuration(MIN_LEASE),
                    HumanDuration(MAX_LEASE)
                ),
            ));
        }
        if self.retention.0 < Duration::from_secs(24 * 3600) {
            problems.push((
                "retention",
                format!(
                    "retention {} is shorter than a day (catch_up reads the claims it keeps; expected at least 1d)",
                    self.retention
                ),
            ));
        }
        problems
    }

    /// The URL and node name in force, the environment's values winning over the file's.
    /// `env` is `std::env::var` in the service; a parameter so tests need not set variables.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(PgUrl, String), SettingsError> {
        let (text, source) = match env(POSTGRES_ENV).filter(|v| !v.trim().is_empty()) {
            Some(text) => (text, POSTGRES_ENV),
            None => match &self.postgres {
                Some(text) => (text.clone(), "cluster.postgres"),
                None => return Err(SettingsError::NoUrl),
            },
        };
        let url = PgUrl::parse(&text).map_err(|err| SettingsError::Url {
            source_name: source,
            err,
        })?;
        let node = match env(NODE_ENV).filter(|v| !v.trim().is_empty()) {
            Some(name) => {
                check_node_name(&name).map_err(|message| SettingsError::Node {
                    source_name: NODE_ENV,
                    message,
                })?;
                name
            }
            None => match &self.node {
                Some(name) => name.clone(),
                None => host_name().ok_or(SettingsError::NoNode)?,
            },
        };
        Ok((url, node))
    }
}

fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?} is not valid (expected 1 to 100 letters, digits, '-', '_' or '.')"
        ))
    }
}

/// The kernel's host name (Linux), the default node name.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    check_node_name(name).ok().map(|()| name.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "cluster: no PostgreSQL URL (set {POSTGRES_ENV} or \"postgres\" in the cluster section)"
    )]
    NoUrl,
    #[error("cluster: the URL in {source_name}: {err}")]
    Url {
        source_name: &'static str,
        err: UrlError,
    },
    #[error("cluster: {source_name}: {message}")]
    Node {
        source_name: &'static str,
        message: String,
    },
    #[error(
        "cluster: the host name cannot serve as node name (set \"node\" in the cluster section or {NODE_ENV})"
    )]
    NoNode,
}

/// libpq's `sslmode`, of which tokio-postgres knows three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// `allow` is read as `prefer`: both take either a TLS or a plain connection.
    Prefer,
    /// Encrypt; verify nothing unless `sslrootcert` names the roots (then as `verify-ca`).
    Require,
    /// Verify the server's chain, not its name.
    VerifyCa,
    /// Verify the chain and that the certificate names the host.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where a verifying `sslmode` finds its trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The Mozilla roots compiled in (webpki-roots); also `sslrootcert=system`.
    WebPki,
    /// `sslrootcert=FILE`: PEM certificates, such as a private CA.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("expected a postgres:// or postgresql:// URL")]
    Scheme,
    #[error(
        "unknown sslmode {0:?} (expected one of: disable, allow, prefer, require, verify-ca, verify-full)"
    )]
    SslMode(String),
    #[error("{0}")]
    Invalid(String),
}

/// A parsed PostgreSQL URL: what to connect to and how to secure it. Shown only redacted.
#[derive(Clone)]
pub struct PgUrl {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    roots: Roots,
}

impl PgUrl {
    pub fn parse(text: &str) -> Result<PgUrl, UrlError> {
        let text = text.trim();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(UrlError::Scheme);
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let mut kept = Vec::new();
        let mut ssl_mode = SslMode::Prefer;
        let mut root_file = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "sslmode" => {
                    ssl_mode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        _ => return Err(UrlError::SslMode(value)),
                    }
                }
                "sslrootcert" => {
                    root_file = (value != "system").then(|| PathBuf::from(value));
                }
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rest
            .parse()
            // tokio-postgres's messages name the option, never its value.
            .map_err(|err: tokio_postgres::Error| UrlError::Invalid(err.to_string()))?;
        if ssl_mode == SslMode::Require && root_file.is_some() {
            ssl_mode = SslMode::VerifyCa;
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        Ok(PgUrl {
            config,
            ssl_mode,
            roots: root_file.map_or(Roots::WebPki, Roots::File),
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The parsed connection parameters, before the timeouts a node sets.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The URL for logs and `status`: rebuilt from its parts, the password shown as `***`.
    pub fn redacted(&self) -> String {
        use tokio_postgres::config::Host;
        let c = &self.config;
        let mut out = String::from("postgres://");
        if let Some(user) = c.get_user() {
            out.push_str(&encode(user));
            if c.get_password().is_some() {
                out.push_str(":***");
            }
            out.push('@');
        }
        let ports = c.get_ports();
        let mut sockets = Vec::new();
        let mut hosts = Vec::new();
        for (i, host) in c.get_hosts().iter().enumerate() {
            match host {
                Host::Tcp(name) => {
                    let name = if name.contains(':') {
                        format!("[{name}]")
                    } else {
                        encode(name)
                    };
                    hosts.push(match ports.get(i).or(ports.first()) {
                        Some(port) => format!("{name}:{port}"),
                        None => name,
                    });
                }
                Host::Unix(path) => sockets.push(path.display().to_string()),
            }
        }
        out.push_str(&hosts.join(","));
        out.push('/');
        if let Some(db) = c.get_dbname() {
            out.push_str(&encode(db));
        }
        let mut params = vec![format!("sslmode={}", self.ssl_mode.as_str())];
        if let Roots::File(path) = &self.roots {
            params.push(format!(
                "sslrootcert={}",
                encode(&path.display().to_string())
            ));
        }
        for socket in sockets {
            params.push(format!("host={}", encode(&socket)));
        }
        if let Some(name) = c.get_application_name() {
            params.push(format!("application_name={}", encode(name)));
        }
        out.push('?');
        out.push_str(&params.join("&"));
        out
    }
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        // Keep the common characters of host and database names readable.
        .replace("%2E", ".")
        .replace("%2D", "-")
        .replace("%5F", "_")
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted())
    }
}

/// Everything a node is started with. The service builds it from [`ClusterConfig::resolve`],
/// its version, its instance and the effective schedules.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: PgUrl,
    /// Unique among live nodes (a second live node with this name is refused).
    pub node: String,
    /// Names the instance across restarts: a restart of the same instance (same id) takes
    /// its name back at once instead of waiting out the previous process's lease.
    pub instance_id: String,
    pub version: String,
    pub lease: Duration,
    pub retention: Duration,
    /// [`super::schedules_hash`] of the effective schedules.
    pub schedules_hash: String,
    /// Schedules with `catch_up = true`: a survivor claims their interrupted instants again.
    pub catch_up: Vec<String>,
    /// Rows held in memory while the database is away.
    pub outbox_capacity: usize,
    /// The instance's task_timing.tsv: rows the outbox had to drop, or that a stopped or
    /// crashed process never sent, are sent again from it (inserts are idempotent).
    pub backfill_from: Option<PathBuf>,
}

impl Settings {
    pub fn new(url: PgUrl, node: impl Into<String>, instance_id: impl Into<String>) -> Settings {
        Settings {
            url,
            node: node.into(),
            instance_id: instance_id.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
            schedules_hash: String::new(),
            catch_up: Vec::new(),
            outbox_capacity: DEFAULT_OUTBOX,
            backfill_from: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mode_inherits_the_database_url() {
        assert!(crate::runner::SERVICE_ONLY_ENV.contains(&POSTGRES_ENV));
    }

    #[test]
    fn the_password_never_appears_in_the_rendered_url() {
        for (text, secret) in [
            ("postgres://app:s3cr3t-Pw@db.example:5433/loop", "s3cr3t-Pw"),
            (
                "postgresql://app:p%40ss%2Fw%3Frd@db.example/loop?sslmode=verify-full",
                "p%40ss",
            ),
            (
                "postgres://app@db.example/loop?password=hunter2&application_name=lo",
                "hunter2",
            ),
            ("postgres://app:x@10.0.0.1,10.0.0.2:6000/loop", ":x@"),
        ] {
            let url = PgUrl::parse(text).unwrap();
            for shown in [url.redacted(), url.to_string(), format!("{url:?}")] {
                assert!(!shown.contains(secret), "{shown} shows the password");
                assert!(!shown.contains("p@ss"), "{shown} shows the password");
            }
        }
        let url = PgUrl::parse("postgres://app:s3cr3t@db.example:5433/loop").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db.example:5433/loop?sslmode=prefer"
        );
        let config = ClusterConfig {
            postgres: Some("postgres://app:s3cr3t@db/loop".into()),
            node: None,
            lease: default_lease(),
            retention: default_retention(),
        };
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }

    #[test]
    fn sslmode_has_libpq_meaning() {
        let mode = |q: &str| PgUrl::parse(&format!("postgres://u@h/d?{q}")).map(|u| u.ssl_mode());
        assert_eq!(mode("sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("sslmode=allow"), Ok(SslMode::Prefer));
        assert_eq!(mode(""), Ok(SslMode::Prefer));
        assert_eq!(mode("sslmode=require"), Ok(SslMode::Require));
        assert_eq!(
            mode("sslmode=require&sslrootcert=/etc/ca.pem"),
            Ok(SslMode::VerifyCa)
        );
        assert_eq!(mode("sslmode=verify-full"), Ok(SslMode::VerifyFull));
        assert!(matches!(mode("sslmode=always"), Err(UrlError::SslMode(_))));
        let url =
            PgUrl::parse("postgres://u@h/d?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem").unwrap();
        assert_eq!(url.roots(), &Roots::File("/etc/ca.pem".into()));
        assert_eq!(
            url.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert!(matches!(
            PgUrl::parse("mysql://u@h/d"),
            Err(UrlError::Scheme)
        ));
        assert!(matches!(
            PgUrl::parse("postgres://u@h/d?frobnicate=1"),
            Err(UrlError::Invalid(_))
        ));
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let config = ClusterConfig {
            postgres: Some("postgres://file@filehost/loop".into()),
            node: Some("from-file".into()),
            lease: default_lease(),
            retention: default_retention(),
        };
        let env = |key: &str| match key {
            POSTGRES_ENV => Some("postgres://env:pw@envhost/loop".to_string()),
            NODE_ENV => Some("from-env".to_string()),
            _ => None,
        };
        let (url, node) = config.resolve(env).unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://env:***@envhost:5432/loop?sslmode=prefer"
        );
        assert_eq!(node, "from-env");
        let (url, node) = config.resolve(|_| None).unwrap();
        assert!(url.redacted().contains("filehost"));
        assert_eq!(node, "from-file");
        let bare = ClusterConfig {
            postgres: None,
            ..config
        };
        assert!(matches!(bare.resolve(|_| None), Err(SettingsError::NoUrl)));
    }

    #[test]
    fn check_names_the_field() {
        let config = ClusterConfig {
            postgres: Some("postgres://u@h/d?sslmode=sometimes".into()),
            node: Some("has space".into()),
            lease: HumanDuration(Duration::from_secs(1)),
            retention: HumanDuration(Duration::from_secs(60)),
        };
        let fields: Vec<&str> = config.check().iter().map(|p| p.0).collect();
        assert_eq!(fields, ["postgres", "node", "lease", "retention"]);
    }
}
