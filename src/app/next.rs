//! `next`: the upcoming fire instants of one schedule or all, local and UTC.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::exit::Error;
use crate::instance::Instance;

#[derive(Debug, Clone, serde::Serialize)]
pub struct NextFires {
    pub schedule: String,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub fires: Vec<Fire>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Fire {
    pub at: DateTime<Utc>,
    /// The instant in the schedule's zone, e.g. `2026-11-21 11:00:00 CET (+01:00)`.
    pub local: String,
}

pub fn next(
    inst: &Instance,
    id: Option<&str>,
    count: usize,
    now: DateTime<Utc>,
) -> Result<Vec<NextFires>, Error> {
    let config = Config::load(inst.root())?;
    let schedules: Vec<_> = match id {
        Some(id) => vec![super::find_schedule(&config, id)?],
        None => config.schedules.iter().collect(),
    };
    Ok(schedules
        .into_iter()
        .map(|s| NextFires {
            schedule: s.id.clone(),
            cron: s.cron.expr().to_string(),
            timezone: s.timezone.name().to_string(),
            enabled: s.enabled,
            fires: s
                .cron
                .iter_after(now, &s.timezone)
                .take(count)
                .map(|at| Fire {
                    at,
                    local: s.timezone.format(at, "%Y-%m-%d %H:%M:%S %Z (%:z)"),
                })
                .collect(),
        })
        .collect())
}
