//! loop-orchestrator: a cron supervisor for autonomous work loops.
//!
//! Data flows one way: files → validated [`config::Config`] → the [`service`] (or
//! `run-cycle`) → [`cycle`] → [`runner`] → outcome → [`recorder`] → [`timing`] row +
//! [`memory`] entry. [`app`] holds the commands as functions that return data; [`cli`] only
//! parses and renders them. The stores (`timing`, `memory`, `todo`, `state`, `runs`) and the
//! runner know nothing of cycles or the service; [`instance`] knows every path. README's
//! "Code map" lists every module in the order data flows.

pub mod agent;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod cron;
pub mod cycle;
pub mod duration;
pub mod exit;
pub mod fsutil;
pub mod heap;
pub mod instance;
pub mod leftover;
pub mod limits;
pub mod lock;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod mode;
pub mod problem;
pub mod program;
pub mod prompt;
pub mod protocol;
pub mod recorder;
pub mod render;
pub mod report;
pub mod roomodes;
pub mod runner;
pub mod runs;
pub mod schedule;
pub mod service;
pub mod state;
pub mod timing;
pub mod todo;
pub mod zone;
