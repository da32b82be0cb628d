//! sd_notify: the datagrams a `Type=notify` service sends to systemd.
//!
//! The protocol is small enough to write by hand (no libsystemd): one `AF_UNIX` datagram
//! per notification, holding newline-separated `KEY=VALUE` assignments, sent to the socket
//! named by `NOTIFY_SOCKET`.
//!
//! Rules:
//! - `NOTIFY_SOCKET` unset or empty: the [`Notifier`] is disabled and every send is a
//!   successful no-op, so callers never branch on "are we under systemd".
//! - A value starting with `/` is a filesystem socket; `@name` is `name` in Linux's
//!   abstract namespace. Anything else (systemd also knows `vsock:`) is kept and reported
//!   as an error on every send rather than silently ignored: the manager is waiting for
//!   `READY=1` and the operator needs to see why it never comes.
//! - Sends never block the caller for long and never panic; errors are returned and the
//!   caller logs them. A service must keep working when the manager is gone.
//! - `RELOADING=1` carries `MONOTONIC_USEC` (`CLOCK_MONOTONIC` in µs), which
//!   `Type=notify-reload` requires; `READY=1` ends the reload.
//! - The watchdog is on when `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or names
//!   this process; pings go out at half the interval, as sd_watchdog_enabled(3) advises.
//!
//! Children inherit the environment: whoever spawns them should remove `NOTIFY_SOCKET`,
//! `WATCHDOG_USEC` and `WATCHDOG_PID` so an agent cannot speak for the service.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Where notifications go, read once from `NOTIFY_SOCKET`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
    /// A value this implementation cannot send to; kept to report it on each send.
    Unsupported(String),
}

/// Sends sd_notify datagrams to the service manager, or nothing when there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). Disabled when unset.
    pub fn from_env() -> Notifier {
        Self::from_os(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// As [`Notifier::from_env`] with the variable's value given, so tests need not touch
    /// the process environment.
    pub fn from_value(value: Option<&str>) -> Notifier {
        Self::from_os(value.map(OsStr::new))
    }

    fn from_os(value: Option<&OsStr>) -> Notifier {
        let target = match value {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(match v.as_bytes() {
                [b'@', name @ ..] => Target::Abstract(name.to_vec()),
                [b'/', ..] => Target::Path(PathBuf::from(v)),
                _ => Target::Unsupported(v.to_string_lossy().into_owned()),
            }),
        };
        Notifier { target }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// Whether a service manager asked for notifications.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one datagram with the given newline-separated assignments; errors are returned, callers log them.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        // Never wait for the receiver: a manager that does not read (or reads slowly) must not
        // stall the service's loop. A full queue drops the message (an error the caller logs).
        socket.set_nonblocking(true)?;
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                let addr = SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &addr)
            }
            Target::Unsupported(value) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={value:?} is not supported: expected an absolute socket path or @abstract-name"
                    ),
                ));
            }
        }?;
        // A datagram is all or nothing; a short count would mean a truncated message.
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sd_notify sent {sent} of {} bytes", state.len()),
            ));
        }
        Ok(())
    }

    /// `READY=1` with a status line: startup (or a reload) is complete.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=`: the free-form line `systemctl status` shows.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` timestamp `Type=notify-reload` requires.
    pub fn reloading(&self) -> io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let usec = monotonic_usec()?;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
    }

    /// `STOPPING=1`: the service began its shutdown.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// `WATCHDOG=1`: the keep-alive ping.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }
}

/// A status is one assignment; a newline inside it would start a bogus new one.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> io::Result<u64> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).map_err(io::Error::from)?;
    let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000))
}

/// Half of WATCHDOG_USEC, when set (and WATCHDOG_PID is unset or equals our pid).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values: `usec` is `WATCHDOG_USEC`, `pid` is
/// `WATCHDOG_PID`, `our_pid` this process. Unparsable or zero values turn the watchdog
/// off, as sd_watchdog_enabled(3) does.
pub fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Test helper: a bound datagram socket standing in for the service manager.
    #[derive(Debug)]
    pub(super) struct NotifyListener {
        socket: UnixDatagram,
        path: PathBuf,
    }

    impl NotifyListener {
        /// Binds `dir/notify.sock`; give it a fresh temporary directory (socket paths are
        /// limited to about 100 bytes).
        pub(super) fn bind_in(dir: &Path) -> io::Result<NotifyListener> {
            let path = dir.join("notify.sock");
            let socket = UnixDatagram::bind(&path)?;
            Ok(NotifyListener { socket, path })
        }

        /// The value to put in `NOTIFY_SOCKET`.
        pub(super) fn path(&self) -> &Path {
            &self.path
        }

        /// The next datagram, or `None` when none arrives within `timeout`.
        pub(super) fn recv_timeout(&self, timeout: Duration) -> Option<String> {
            // A zero timeout means "block forever" to set_read_timeout.
            let timeout = timeout.max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(timeout)).ok()?;
            let mut buf = vec![0u8; 64 * 1024];
            let n = self.socket.recv(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
    }

    impl Drop for NotifyListener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    fn pair() -> (tempfile::TempDir, NotifyListener, Notifier) {
        let dir = tempfile::tempdir().unwrap();
        let listener = NotifyListener::bind_in(dir.path()).unwrap();
        let value = listener.path().to_str().unwrap().to_owned();
        let notifier = Notifier::from_value(Some(&value));
        (dir, listener, notifier)
    }

    #[test]
    fn each_message_arrives_with_its_exact_text() {
        let (_dir, listener, notifier) = pair();
        assert!(notifier.enabled());

        notifier.ready("loaded 2 schedules").unwrap();
        assert_eq!(
            listener.recv_timeout(WAIT).as_deref(),
            Some("READY=1\nSTATUS=loaded 2 schedules")
        );
        notifier.status("idle; next fire 10:00").unwrap();
        assert_eq!(
            listener.recv_timeout(WAIT).as_deref(),
            Some("STATUS=idle; next fire 10:00")
        );
        notifier.stopping().unwrap();
        assert_eq!(listener.recv_timeout(WAIT).as_deref(), Some("STOPPING=1"));
        notifier.watchdog().unwrap();
        assert_eq!(listener.recv_timeout(WAIT).as_deref(), Some("WATCHDOG=1"));
        notifier.send("EXTEND_TIMEOUT_USEC=5000000").unwrap();
        assert_eq!(
            listener.recv_timeout(WAIT).as_deref(),
            Some("EXTEND_TIMEOUT_USEC=5000000")
        );
    }

    #[test]
    fn reloading_carries_a_monotonic_timestamp_between_two_clock_readings() {
        let (_dir, listener, notifier) = pair();
        let before = monotonic_usec().unwrap();
        notifier.reloading().unwrap();
        let after = monotonic_usec().unwrap();

        let msg = listener.recv_timeout(WAIT).unwrap();
        let usec = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected message {msg:?}"));
        let usec: u64 = usec.parse().unwrap();
        assert!(
            (before..=after).contains(&usec),
            "{before} <= {usec} <= {after}"
        );
    }

    #[test]
    fn a_newline_in_a_status_cannot_inject_an_assignment() {
        let (_dir, listener, notifier) = pair();
        notifier.status("bad\nREADY=1").unwrap();
        assert_eq!(
            listener.recv_timeout(WAIT).as_deref(),
            Some("STATUS=bad READY=1")
        );
    }

    #[test]
    fn a_receiver_that_never_reads_does_not_block_the_sender() {
        // Regression: STATUS= after every fire filled a bench's socket, and a blocking send
        // froze the service loop (it could not even stop).
        let dir = tempfile::tempdir().unwrap();
        let listener = NotifyListener::bind_in(dir.path()).unwrap();
        let notifier = Notifier::from_value(Some(listener.path().to_str().unwrap()));
        let started = std::time::Instant::now();
        let mut dropped = 0;
        for _ in 0..10_000 {
            if notifier.status("x".repeat(200).as_str()).is_err() {
                dropped += 1;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5), "sends blocked");
        assert!(
            dropped > 0,
            "the queue never filled: the test proves nothing"
        );
    }

    #[test]
    fn abstract_namespace_socket_receives_the_datagram() {
        let name = format!(
            "loop-orchestrator-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener.set_read_timeout(Some(WAIT)).unwrap();

        let notifier = Notifier::from_value(Some(&format!("@{name}")));
        assert!(notifier.enabled());
        notifier.ready("up").unwrap();

        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn unset_or_empty_socket_disables_and_sends_succeed_silently() {
        for value in [None, Some("")] {
            let notifier = Notifier::from_value(value);
            assert!(!notifier.enabled(), "{value:?}");
            assert_eq!(notifier, Notifier::disabled());
            notifier.ready("x").unwrap();
            notifier.reloading().unwrap();
            notifier.watchdog().unwrap();
        }
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let notifier = Notifier::from_value(Some(path.to_str().unwrap()));
        assert!(notifier.enabled());
        assert!(notifier.ready("x").is_err());
    }

    #[test]
    fn an_unsupported_socket_value_is_reported_on_send() {
        let notifier = Notifier::from_value(Some("vsock:2:1234"));
        assert!(notifier.enabled());
        let err = notifier.watchdog().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("vsock:2:1234"), "{err}");
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_this_pid() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("41"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(
            watchdog_interval_from(Some("3"), None, 42),
            Some(Duration::from_nanos(1500))
        );
    }
}
