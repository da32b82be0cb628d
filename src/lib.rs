//! loop-orchestrator: a cron supervisor for autonomous work loops.
//!
//! Data flows one way: files → validated [`config::Config`] → the [`supervisor`] (or
//! `run-cycle`) → [`cycle`] → [`runner`] → outcome → [`timing`] row + [`memory`] entry.
//! The stores (`timing`, `memory`, `todo`) and the runner know nothing of cycles or the service.

pub mod agent;
pub mod cli;
pub mod config;
pub mod cron;
pub mod cycle;
pub mod duration;
pub mod heap;
pub mod init;
pub mod leftover;
pub mod lock;
pub mod memory;
pub mod mode;
pub mod notify;
pub mod prompt;
pub mod recorder;
pub mod roomodes;
pub mod runner;
pub mod schedule;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod timer;
pub mod timing;
pub mod todo;
pub mod watch;
