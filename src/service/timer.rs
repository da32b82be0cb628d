//! The deadline timer of the service: sleep until a wall-clock instant, no polling tick.
//!
//! Cron instants are wall-clock (UTC) instants, so the timer is a `timerfd` on
//! `CLOCK_REALTIME` armed with an absolute expiry (`TFD_TIMER_ABSTIME`), with nanosecond
//! resolution. It is armed with `TFD_TIMER_CANCEL_ON_SET`, so when the system clock is set
//! (an NTP step, a manual `date -s`) the kernel wakes the service at once and it re-reads the
//! clock, instead of sleeping on a monotonic interval computed from a clock that changed.
//! tokio's own timer measures monotonic time in milliseconds and cannot do either, which is
//! why this small wrapper exists.
//!
//! A [`Wake::Due`] clears the armed instant (the timerfd has expired), so the next
//! [`WallTimer::arm`] programs it again even for the same instant; a [`Wake::ClockChanged`]
//! re-arms the same instant itself. The caller re-reads the clock at each wake and re-arms,
//! so a wake that finds nothing due (the clock went back) always leaves a live timer.
//!
//! Under libfaketime (the `faketime` package; `tests/time.rs` drives the service with it)
//! the same timerfd works unchanged, so there is no separate code path for tests:
//! libfaketime 0.9.10 and later intercept `timerfd_settime` and convert an absolute expiry
//! from the faked clock to the real one, speed-up included. What it cannot fake is the
//! clock-set cancellation: a faked jump is seen at the next expiry, as a [`Wake::Due`] that
//! finds nothing due (a jump back, and the re-arm above converts the instant again) or a
//! backlog (a jump forward). Both then end as they do after [`Wake::ClockChanged`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use chrono::{DateTime, Utc};
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// Why [`WallTimer::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The armed instant was reached.
    Due,
    /// The system clock was set; instants may have become due or moved away.
    ClockChanged,
}

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct WallTimer {
    fd: AsyncFd<Fd>,
    armed: Option<DateTime<Utc>>,
}

impl WallTimer {
    pub fn new() -> io::Result<WallTimer> {
        let timer = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the AsyncFd owns the TimerFd (through `Fd`), so the descriptor stays open and
        // names the same timer for the AsyncFd's whole life; `as_raw_fd` always returns it.
        let fd =
            unsafe { AsyncFd::register_with_interest(Fd(timer), tokio::io::Interest::READABLE) }
                .map_err(|err| err.into_parts().1)?;
        Ok(WallTimer { fd, armed: None })
    }

    /// Arms the timer for `at` (or disarms it with `None`). Re-arming for the same instant is free.
    pub fn arm(&mut self, at: Option<DateTime<Utc>>) -> io::Result<()> {
        if self.armed == at {
            return Ok(());
        }
        match at {
            None => self.fd.get_ref().0.unset()?,
            Some(at) => {
                // An expiry of zero would disarm the timer; the epoch itself is never a target.
                let nanos = at.timestamp_nanos_opt().unwrap_or(i64::MAX).max(1);
                let spec = TimeSpec::new(nanos / 1_000_000_000, nanos % 1_000_000_000);
                self.fd.get_ref().0.set(
                    Expiration::OneShot(spec),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME
                        | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
                )?;
            }
        }
        self.armed = at;
        Ok(())
    }

    /// Waits until the armed instant or a clock change. Pending forever when disarmed.
    /// Cancel-safe: it only reads the timer's counter.
    pub async fn wait(&mut self) -> io::Result<Wake> {
        if self.armed.is_none() {
            std::future::pending::<()>().await;
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            match nix::unistd::read(guard.get_inner().0.as_fd(), &mut buf) {
                Ok(_) => {
                    self.armed = None;
                    return Ok(Wake::Due);
                }
                Err(Errno::ECANCELED) => {
                    // The timer stays armed for the same absolute instant; re-arm to clear the
                    // cancel state.
                    let at = self.armed.take();
                    self.arm(at)?;
                    return Ok(Wake::ClockChanged);
                }
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(err) => return Err(err.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_the_armed_instant_not_before() {
        let mut timer = WallTimer::new().unwrap();
        let at = Utc::now() + chrono::Duration::milliseconds(150);
        timer.arm(Some(at)).unwrap();
        let wake = tokio::time::timeout(Duration::from_secs(5), timer.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wake, Wake::Due);
        assert!(Utc::now() >= at, "woke before the instant");
    }

    #[tokio::test]
    async fn a_past_instant_is_due_at_once() {
        let mut timer = WallTimer::new().unwrap();
        timer
            .arm(Some(Utc::now() - chrono::Duration::seconds(5)))
            .unwrap();
        let wake = tokio::time::timeout(Duration::from_secs(1), timer.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wake, Wake::Due);
    }

    #[tokio::test]
    async fn disarmed_timer_never_wakes() {
        let mut timer = WallTimer::new().unwrap();
        timer
            .arm(Some(Utc::now() + chrono::Duration::milliseconds(50)))
            .unwrap();
        timer.arm(None).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), timer.wait())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn rearming_the_same_instant_after_a_wake_arms_it_again() {
        // The service re-arms the instant it woke for when the clock says it is not due yet;
        // the timerfd expired, so skipping that arm as "unchanged" would sleep forever.
        let mut timer = WallTimer::new().unwrap();
        let at = Utc::now() + chrono::Duration::milliseconds(50);
        timer.arm(Some(at)).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), timer.wait()).await;
        assert_eq!(first.unwrap().unwrap(), Wake::Due);
        timer.arm(Some(at)).unwrap();
        let again = tokio::time::timeout(Duration::from_secs(1), timer.wait()).await;
        assert_eq!(again.expect("the re-armed timer wakes").unwrap(), Wake::Due);
    }

    #[tokio::test]
    async fn rearming_moves_the_deadline() {
        let mut timer = WallTimer::new().unwrap();
        timer
            .arm(Some(Utc::now() + chrono::Duration::seconds(60)))
            .unwrap();
        let soon = Utc::now() + chrono::Duration::milliseconds(100);
        timer.arm(Some(soon)).unwrap();
        let wake = tokio::time::timeout(Duration::from_secs(5), timer.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wake, Wake::Due);
        assert!(Utc::now() >= soon);
    }
}
