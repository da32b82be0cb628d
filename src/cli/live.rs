//! `run-cycle` on a terminal: the lines [`crate::render::progress`] prints, and while a mode
//! runs, one more line on stderr with the mode and its elapsed time, rewritten in place.
//!
//! Rules: used only when stderr is a terminal (otherwise the output is exactly
//! `render::progress`'s); the live line is cleared before any other line is printed, so it
//! never remains in the scrollback; it is redrawn every [`TICK`] by a task on the
//! run's own (current-thread) runtime, which runs only while the cycle waits, so a redraw
//! never interleaves with a printed line.

use std::io::Write as _;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::app::run_cycle::Progress;
use crate::duration::short;
use crate::render;

/// How often the elapsed time is redrawn.
pub const TICK: Duration = Duration::from_millis(200);
/// Carriage return, then erase the whole line (ECMA-48 EL, `CSI 2 K`).
const CLEAR: &str = "\r\x1b[2K";

/// The progress printer of a terminal.
#[derive(Default)]
pub struct Live {
    ticker: Option<JoinHandle<()>>,
}

impl Live {
    /// Must be called inside a tokio runtime (the ticker is a task).
    pub fn event(&mut self, event: Progress<'_>) {
        self.stop();
        if let Progress::ModeStarted { mode, attempt, .. } = event {
            let attempt = if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            let mode = mode.to_string();
            let started = Instant::now();
            self.ticker = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    // Same columns as a finished mode's line.
                    let line = format!(
                        "{CLEAR}  {mode:<15} {:<11} {:>8}{attempt}",
                        "running",
                        short(started.elapsed())
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(line.as_bytes()).and_then(|()| err.flush());
                }
            }));
        } else {
            render::progress(event);
        }
    }

    /// Stops the ticker and clears its line.
    fn stop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(CLEAR.as_bytes()).and_then(|()| err.flush());
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop();
    }
}
