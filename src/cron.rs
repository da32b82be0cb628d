//! Temporary stand-in; replaced by the real module.
use chrono::{DateTime, Utc};
use std::str::FromStr;
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);
#[derive(Debug, Clone)]
pub struct Cron {
    expr: String,
    inner: croner::Cron,
}
impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let inner = croner::Cron::from_str(expr).map_err(|e| CronError(e.to_string()))?;
        Ok(Cron {
            expr: expr.to_string(),
            inner,
        })
    }
    pub fn expr(&self) -> &str {
        &self.expr
    }
    pub fn is_fixed_time(&self) -> bool {
        false
    }
    pub fn next_after(&self, after: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        self.inner
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
    pub fn iter_after(
        &self,
        after: DateTime<Utc>,
        tz: chrono_tz::Tz,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let mut cur = after;
        std::iter::from_fn(move || {
            let n = self.next_after(cur, tz)?;
            cur = n;
            Some(n)
        })
    }
}
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, CronError> {
    name.parse()
        .map_err(|_| CronError(format!("unknown time zone {name:?}")))
}
