//! loop-orchestrator: a cron supervisor for autonomous work loops.

pub mod config;
pub mod cron;
pub mod duration;
pub mod mode;
pub mod schedule;
