//! One connection to the cluster's database and every statement the cluster runs: the SQL
//! layer, without state of its own. [`super::Node`] runs a node on it; `status --cluster`
//! and `resume` use it directly.
//!
//! Rules:
//! - Every comparison of a lease or a heartbeat with the time is made by the database with
//!   its own `now()`; no node's clock is ever compared with a stored time.
//! - The statements of the dispatch path (claim, heartbeat and renewal, finish, release) are
//!   prepared once per connection, so each is one round trip; each is one statement, so it
//!   is atomic without a transaction.
//! - The schema is migrated at every connect ([`migrate`]): in one transaction under a
//!   transaction-level advisory lock, so nodes starting together migrate once and the others
//!   find the work done. A database migrated by a newer binary is refused.
//! - Texts sent are stripped of NUL, which PostgreSQL refuses in `text`, so no row of a
//!   node's TSV can poison a batch.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row as PgRow, Statement};

use super::settings::PgUrl;
use super::tls;
use crate::timing::{Priority, Row, Status};

/// The migrations, in order: (version, name, SQL). Append only; never edit a shipped one.
pub const MIGRATIONS: &[(i32, &str, &str)] =
    &[(1, "initial", include_str!("migrations/001_initial.sql"))];

/// `pg_advisory_xact_lock` key of the migration ("loop-orc" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6f70_2d6f_7263;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("no answer from the database within {0:?}")]
    Timeout(Duration),
    #[error("database: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error(
        "the database's schema is at version {found}, newer than this binary's {known}: upgrade loop-orchestrator on this node"
    )]
    SchemaTooNew { found: i32, known: i32 },
}

impl DbError {
    /// Whether the connection is gone (or its state unknown): the caller reconnects.
    pub fn is_connection(&self) -> bool {
        match self {
            DbError::Connect { .. } | DbError::Timeout(_) => true,
            DbError::Query(err) => err.is_closed() || err.as_db_error().is_none(),
            DbError::SchemaTooNew { .. } => false,
        }
    }
}

/// Runs `future` with a deadline; a query that outlives it leaves the connection suspect.
pub(crate) async fn within<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, DbError>>,
) -> Result<T, DbError> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or(Err(DbError::Timeout(limit)))
}

/// (schedule, instant, attempt): what a claim is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    pub schedule: String,
    pub scheduled_at: DateTime<Utc>,
    pub attempt: u32,
}

/// A schedule due at the instant being claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub schedule: String,
    /// The id the cycle will run under: a survivor writes its `interrupted` row with it.
    pub cycle: String,
    /// Start of the schedule's day (in its time zone) when it has a budget: the claim then
    /// answers the cost spent since, across nodes.
    pub cost_since: Option<DateTime<Utc>>,
}

/// The cluster-wide rules that hold for a claimed schedule, read in the claim's round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Another node runs a cycle of this schedule (its name): `overlap` applies.
    pub running_on: Option<String>,
    /// In force only while its fingerprint is this node's for the schedule: a changed
    /// entry lifts an escalation (SPEC §7, "until the file changes").
    pub escalation: Option<Escalation>,
    /// A rate-limit pause in force.
    pub paused: Option<Pause>,
    /// Cost of the schedule's rows since `Due::cost_since`, all nodes.
    pub cost_since: Option<f64>,
}

/// A claim won by this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub key: ClaimKey,
    pub cycle: String,
    /// The fencing token: names this holding of the claim and nothing else.
    pub fence: i64,
    /// On the database's clock.
    pub lease_until: DateTime<Utc>,
    pub rules: Rules,
}

/// A claim another node held until its lease ran out, now marked interrupted.
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupted {
    pub key: ClaimKey,
    pub cycle: String,
    /// The node that held it.
    pub node: String,
    pub claimed_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

/// What one takeover pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Takeover {
    /// Claims of other nodes marked interrupted: the survivor writes their cycle rows.
    pub interrupted: Vec<Interrupted>,
    /// Instants of `catch_up` schedules claimed again (attempt 2) by this node.
    pub retries: Vec<Claim>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub schedule: String,
    pub fingerprint: String,
    pub failures: u32,
    pub node: String,
    pub escalated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub schedule: String,
    pub until: DateTime<Utc>,
    pub reason: String,
    pub node: String,
}

/// What a node registers with.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    pub node: &'a str,
    pub instance_id: &'a str,
    pub session: &'a str,
    pub version: &'a str,
    pub schedules_hash: &'a str,
    pub lease: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    Ok {
        /// Running claims of an earlier process of this instance, now expired so a takeover
        /// pass interrupts them at once.
        expired_claims: u64,
    },
    /// A live node of another instance has the name.
    Taken {
        instance_id: String,
        heartbeat_age: Duration,
    },
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    /// False when the node's row belongs to another session now: fenced out.
    pub registered: bool,
    /// The fences whose leases were renewed; the others are lost.
    pub renewed: Vec<i64>,
    pub db_now: DateTime<Utc>,
}

/// One node as `status --cluster` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    pub instance_id: String,
    pub version: String,
    pub schedules_hash: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
    pub heartbeat_age: Duration,
    pub running_cycles: u32,
    pub stopped_at: Option<DateTime<Utc>>,
    pub live: bool,
    /// Live, and its schedules hash is not the live majority's (or there is none).
    pub hash_differs: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunningClaim {
    pub key: ClaimKey,
    pub node: String,
    pub cycle: String,
    pub claimed_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// Its lease ran out and no survivor has taken it over yet.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LastCycle {
    pub key: ClaimKey,
    pub node: String,
    /// `running`, `done` or `interrupted`.
    pub state: String,
    pub status: Option<String>,
}

/// Everything `status --cluster` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub db_now: DateTime<Utc>,
    pub nodes: Vec<NodeStatus>,
    /// The schedules hash of more than half of the live nodes, if any.
    pub majority_hash: Option<String>,
    pub running: Vec<RunningClaim>,
    /// Per schedule, its latest claim.
    pub last_cycles: Vec<LastCycle>,
    pub escalations: Vec<Escalation>,
    pub pauses: Vec<Pause>,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub claims: u64,
    pub rows: u64,
    pub nodes: u64,
}

/// The statements of the dispatch path, prepared once per connection.
struct Prepared {
    claim: Statement,
    beat: Statement,
    finish: Statement,
    release: Statement,
}

/// One open connection, its schema migrated.
pub struct Db {
    client: Client,
    prepared: Prepared,
    connection: JoinHandle<()>,
    /// The migrations this connect applied (empty when another node had).
    pub applied: Vec<i32>,
}

impl Drop for Db {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("closed", &self.is_closed())
            .finish()
    }
}

const CLAIM_SQL: &str = "
WITH want AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS w(schedule, cycle, cost_since)
), won AS (
    INSERT INTO claims (schedule, scheduled_at, attempt, node, session, cycle, state, lease_until)
    SELECT w.schedule, $4::timestamptz, 1, $5::text, $6::text, w.cycle, 'running',
           now() + $7::bigint * interval '1 millisecond'
    FROM want w
    ON CONFLICT DO NOTHING
    RETURNING schedule, cycle, fence, lease_until
)
SELECT won.schedule, won.cycle, won.fence, won.lease_until,
    (SELECT c.node FROM claims c
      WHERE c.schedule = won.schedule AND c.state = 'running'
        AND c.lease_until >= now() AND c.node <> $5::text
      LIMIT 1) AS running_on,
    e.fingerprint, e.failures, e.node AS e_node, e.escalated_at,
    p.until, p.reason, p.node AS p_node,
    CASE WHEN w.cost_since IS NULL THEN NULL ELSE
        (SELECT coalesce(sum(t.cost_usd), 0)::float8 FROM timing_rows t
          WHERE t.schedule = won.schedule AND t.started_at >= w.cost_since AND t.mode <> 'cycle')
    END AS cost
FROM won
JOIN want w ON w.schedule = won.schedule
LEFT JOIN escalations e ON e.schedule = won.schedule
LEFT JOIN pauses p ON p.schedule = won.schedule AND p.until > now()";

const BEAT_SQL: &str = "
WITH hb AS (
    UPDATE nodes SET heartbeat = now(), running_cycles = $3::int, schedules_hash = $4::text
    WHERE name = $1::text AND session = $2::text
    RETURNING 1
), renewed AS (
    UPDATE claims SET lease_until = now() + $5::bigint * interval '1 millisecond'
    WHERE node = $1::text AND session = $2::text AND state = 'running'
      AND fence = ANY($6::bigint[]) AND lease_until >= now()
      AND EXISTS (SELECT 1 FROM hb)
    RETURNING fence
)
SELECT EXISTS (SELECT 1 FROM hb),
       coalesce((SELECT array_agg(fence) FROM renewed), '{}'::bigint[]),
       now()";

const FINISH_SQL: &str = "
UPDATE claims c SET state = 'done', status = f.status, finished_at = now()
FROM unnest($2::bigint[], $3::text[]) AS f(fence, status)
WHERE c.fence = f.fence AND c.node = $1::text AND c.state = 'running'
RETURNING c.fence";

const RELEASE_SQL: &str = "
UPDATE claims SET state = 'interrupted', status = 'interrupted', finished_at = now(), released = true
WHERE node = $1::text AND state = 'running'
  AND (fence = ANY($2::bigint[]) OR ($3::text IS NOT NULL AND session = $3::text))
RETURNING schedule, scheduled_at, attempt";

impl Db {
    /// Connects with timeouts fitted to `lease` (a cut network is noticed within a lease),
    /// migrates the schema, and prepares the dispatch statements.
    pub async fn connect(url: &PgUrl, lease: Duration) -> Result<Db, DbError> {
        let connect_error = |message: String| DbError::Connect {
            url: url.redacted(),
            message,
        };
        let third = (lease / 3).max(Duration::from_secs(1));
        let mut config = url.config().clone();
        config
            .connect_timeout(third)
            // Unacknowledged data for a third of a lease: the kernel drops the connection.
            .tcp_user_timeout(third)
            .keepalives(true)
            .keepalives_idle((lease / 6).max(Duration::from_secs(1)))
            .keepalives_interval((lease / 12).max(Duration::from_secs(1)))
            .keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("loop-orchestrator");
        }
        let tls = tls::connector(url).map_err(connect_error)?;
        let (mut client, connection) = tokio::time::timeout(third * 2, config.connect(tls))
            .await
            .map_err(|_| connect_error(format!("no answer within {third:?}")))?
            .map_err(|err| connect_error(chain(&err)))?;
        let connection = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "cluster: connection ended");
            }
        });
        let applied = within(lease, migrate(&mut client)).await?;
        let prepare = async {
            Ok::<_, DbError>(Prepared {
                claim: client.prepare(CLAIM_SQL).await?,
                beat: client.prepare(BEAT_SQL).await?,
                finish: client.prepare(FINISH_SQL).await?,
                release: client.prepare(RELEASE_SQL).await?,
            })
        };
        let prepared = within(lease, prepare).await?;
        Ok(Db {
            client,
            prepared,
            connection,
            applied,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.connection.is_finished()
    }

    /// The server's process id of this connection (tests end it with
    /// `pg_terminate_backend`).
    pub async fn backend_pid(&self) -> Result<i32, DbError> {
        Ok(self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0))
    }

    pub async fn db_now(&self) -> Result<DateTime<Utc>, DbError> {
        Ok(self.client.query_one("SELECT now()", &[]).await?.get(0))
    }

    /// Takes the node's name; refused while a live node of another instance holds it. An
    /// earlier process of the same instance is replaced at once and its running claims
    /// expire now, for the takeover pass.
    pub async fn register(&self, r: &Registration<'_>) -> Result<Registered, DbError> {
        let row = self
            .client
            .query_one(
                "
WITH reg AS (
    INSERT INTO nodes (name, instance_id, session, version, schedules_hash, lease_ms)
    VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint)
    ON CONFLICT (name) DO UPDATE SET
        instance_id = EXCLUDED.instance_id, session = EXCLUDED.session,
        version = EXCLUDED.version, schedules_hash = EXCLUDED.schedules_hash,
        lease_ms = EXCLUDED.lease_ms, started_at = now(), heartbeat = now(),
        running_cycles = 0, stopped_at = NULL
    WHERE nodes.stopped_at IS NOT NULL
       OR nodes.heartbeat < now() - nodes.lease_ms * interval '1 millisecond'
       OR nodes.instance_id = EXCLUDED.instance_id
    RETURNING name
), expired AS (
    UPDATE claims SET lease_until = now()
    WHERE node = $1::text AND session <> $3::text AND state = 'running'
      AND lease_until > now() AND EXISTS (SELECT 1 FROM reg)
    RETURNING fence
)
SELECT (SELECT count(*) FROM reg), (SELECT count(*) FROM expired),
       (SELECT instance_id FROM nodes WHERE name = $1::text),
       (SELECT extract(epoch FROM now() - heartbeat)::float8 FROM nodes WHERE name = $1::text)",
                &[
                    &r.node,
                    &r.instance_id,
                    &r.session,
                    &r.version,
                    &r.schedules_hash,
                    &millis(r.lease),
                ],
            )
            .await?;
        let registered: i64 = row.get(0);
        if registered == 1 {
            let expired: i64 = row.get(1);
            return Ok(Registered::Ok {
                expired_claims: expired as u64,
            });
        }
        Ok(Registered::Taken {
            instance_id: row.get::<_, Option<String>>(2).unwrap_or_default(),
            heartbeat_age: secs(row.get::<_, Option<f64>>(3).unwrap_or(0.0)),
        })
    }

    /// Heartbeat and renewal of every lease in `fences`, one statement.
    pub async fn beat(
        &self,
        node: &str,
        session: &str,
        schedules_hash: &str,
        lease: Duration,
        fences: &[i64],
    ) -> Result<Beat, DbError> {
        let running = i32::try_from(fences.len()).unwrap_or(i32::MAX);
        let row = self
            .client
            .query_one(
                &self.prepared.beat,
                &[
                    &node,
                    &session,
                    &running,
                    &schedules_hash,
                    &millis(lease),
                    &fences,
                ],
            )
            .await?;
        Ok(Beat {
            registered: row.get(0),
            renewed: row.get(1),
            db_now: row.get(2),
        })
    }

    /// Claims attempt 1 of `scheduled_at` for every schedule of `due` that no node has
    /// claimed: one round trip. Returns the claims won, with the cluster-wide rules of each.
    pub async fn claim(
        &self,
        node: &str,
        session: &str,
        lease: Duration,
        scheduled_at: DateTime<Utc>,
        due: &[Due],
    ) -> Result<Vec<Claim>, DbError> {
        let schedules: Vec<&str> = due.iter().map(|d| d.schedule.as_str()).collect();
        let cycles: Vec<String> = due.iter().map(|d| clean(&d.cycle)).collect();
        let since: Vec<Option<DateTime<Utc>>> = due.iter().map(|d| d.cost_since).collect();
        let rows = self
            .client
            .query(
                &self.prepared.claim,
                &[
                    &schedules,
                    &cycles,
                    &since,
                    &scheduled_at,
                    &node,
                    &session,
                    &millis(lease),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Claim {
                key: ClaimKey {
                    schedule: row.get(0),
                    scheduled_at,
                    attempt: 1,
                },
                cycle: row.get(1),
                fence: row.get(2),
                lease_until: row.get(3),
                rules: Rules {
                    running_on: row.get(4),
                    escalation: row
                        .get::<_, Option<String>>(5)
                        .map(|fingerprint| Escalation {
                            schedule: row.get(0),
                            fingerprint,
                            failures: row.get::<_, i32>(6).max(0) as u32,
                            node: row.get(7),
                            escalated_at: row.get(8),
                        }),
                    paused: row.get::<_, Option<DateTime<Utc>>>(9).map(|until| Pause {
                        schedule: row.get(0),
                        until,
                        reason: row.get(10),
                        node: row.get(11),
                    }),
                    cost_since: row.get(12),
                },
            })
            .collect())
    }

    /// Marks claims done with their cycle's status. Returns the fences finished; a fence
    /// missing was no longer this node's (taken over, or released).
    pub async fn finish(&self, node: &str, ends: &[(i64, Status)]) -> Result<Vec<i64>, DbError> {
        let fences: Vec<i64> = ends.iter().map(|e| e.0).collect();
        let statuses: Vec<&str> = ends.iter().map(|e| e.1.as_str()).collect();
        let rows = self
            .client
            .query(&self.prepared.finish, &[&node, &fences, &statuses])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Marks this node's running claims in `fences` (and with `session`, every running claim
    /// of that session) interrupted by their own node: it stopped them, or never started
    /// them. A survivor claims the `catch_up` ones again without writing a row for them.
    pub async fn release(
        &self,
        node: &str,
        fences: &[i64],
        session: Option<&str>,
    ) -> Result<Vec<ClaimKey>, DbError> {
        let rows = self
            .client
            .query(&self.prepared.release, &[&node, &fences, &session])
            .await?;
        Ok(rows.iter().map(claim_key).collect())
    }

    /// Marks the node stopped, so its name is free and it counts as gone at once.
    pub async fn stop_node(&self, node: &str, session: &str) -> Result<bool, DbError> {
        let n = self
            .client
            .execute(
                "UPDATE nodes SET stopped_at = now(), running_cycles = 0
                 WHERE name = $1::text AND session = $2::text",
                &[&node, &session],
            )
            .await?;
        Ok(n == 1)
    }

    /// One takeover pass: running claims whose lease ended (and not in `held`, the fences
    /// this node holds) are marked interrupted and returned; attempt 1 of a `catch_up`
    /// schedule, interrupted here or released by its node, is claimed again as attempt 2
    /// by this node. Each claim is taken over by exactly one survivor: the updates lock the
    /// rows and re-check their state.
    ///
    /// A lease that ran out while the server itself was down is counted from the server's
    /// start instead (`pg_postmaster_start_time()` + a lease): no node could renew then, and
    /// a node whose cycle ended during the outage gets a lease to report it before a
    /// survivor would record it interrupted and run it again.
    pub async fn takeover(
        &self,
        node: &str,
        session: &str,
        lease: Duration,
        held: &[i64],
        catch_up: &[String],
    ) -> Result<Takeover, DbError> {
        let rows = self
            .client
            .query(
                "
WITH expired AS (
    UPDATE claims SET state = 'interrupted', status = 'interrupted', finished_at = now(),
        taken_over_by = $1::text,
        retried = (attempt = 1 AND schedule = ANY($5::text[]))
    WHERE state = 'running' AND NOT (fence = ANY($4::bigint[]))
      AND greatest(lease_until, pg_postmaster_start_time() + $3::bigint * interval '1 millisecond') < now()
    RETURNING schedule, scheduled_at, attempt, cycle, node, claimed_at, lease_until, retried
), handed AS (
    UPDATE claims SET retried = true, taken_over_by = $1::text
    WHERE released AND NOT retried AND attempt = 1 AND schedule = ANY($5::text[])
    RETURNING schedule, scheduled_at, attempt, cycle
), again AS (
    INSERT INTO claims (schedule, scheduled_at, attempt, node, session, cycle, state, lease_until)
    SELECT r.schedule, r.scheduled_at, r.attempt + 1, $1::text, $2::text, r.cycle, 'running',
           now() + $3::bigint * interval '1 millisecond'
    FROM (SELECT schedule, scheduled_at, attempt, cycle FROM expired WHERE retried
          UNION ALL SELECT schedule, scheduled_at, attempt, cycle FROM handed) r
    ON CONFLICT DO NOTHING
    RETURNING schedule, scheduled_at, attempt, cycle, fence, lease_until
)
SELECT 'interrupted', schedule, scheduled_at, attempt, cycle, node, claimed_at, lease_until,
       NULL::bigint
FROM expired
UNION ALL
SELECT 'retry', schedule, scheduled_at, attempt, cycle, NULL, NULL, lease_until, fence
FROM again",
                &[&node, &session, &millis(lease), &held, &catch_up],
            )
            .await?;
        let mut pass = Takeover::default();
        for row in &rows {
            let key = ClaimKey {
                schedule: row.get(1),
                scheduled_at: row.get(2),
                attempt: row.get::<_, i32>(3).max(1) as u32,
            };
            if row.get::<_, &str>(0) == "interrupted" {
                pass.interrupted.push(Interrupted {
                    key,
                    cycle: row.get(4),
                    node: row.get(5),
                    claimed_at: row.get(6),
                    lease_until: row.get(7),
                });
            } else {
                pass.retries.push(Claim {
                    key,
                    cycle: row.get(4),
                    fence: row.get(8),
                    lease_until: row.get(7),
                    rules: Rules::default(),
                });
            }
        }
        Ok(pass)
    }

    /// Inserts rows written by `node`; a row already there is skipped. Returns how many
    /// were new. Times are cut to milliseconds, as the TSV holds them, so a row resent from
    /// the file matches the row first sent from memory.
    pub async fn insert_rows(&self, node: &str, rows: &[Row]) -> Result<u64, DbError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let scheduled: Vec<Option<DateTime<Utc>>> =
            rows.iter().map(|r| r.scheduled_at.map(to_ms)).collect();
        let started: Vec<DateTime<Utc>> = rows.iter().map(|r| to_ms(r.started_at)).collect();
        let finished: Vec<DateTime<Utc>> = rows.iter().map(|r| to_ms(r.finished_at)).collect();
        let duration: Vec<i64> = rows
            .iter()
            .map(|r| i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
            .collect();
        let priority: Vec<&str> = rows.iter().map(|r| r.priority.as_str()).collect();
        let schedule: Vec<String> = rows.iter().map(|r| clean(&r.schedule)).collect();
        let cycle: Vec<String> = rows.iter().map(|r| clean(&r.cycle)).collect();
        let mode: Vec<String> = rows.iter().map(|r| clean(&r.mode)).collect();
        let attempt: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
            .collect();
        let status: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        let exit: Vec<Option<i32>> = rows.iter().map(|r| r.exit_code).collect();
        let cost: Vec<Option<f64>> = rows
            .iter()
            .map(|r| r.cost_usd.filter(|c| c.is_finite()))
            .collect();
        let note: Vec<String> = rows.iter().map(|r| clean(&r.note)).collect();
        let params: [&(dyn ToSql + Sync); 14] = [
            &node, &scheduled, &started, &finished, &duration, &priority, &schedule, &cycle, &mode,
            &attempt, &status, &exit, &cost, &note,
        ];
        let inserted = self
            .client
            .execute(
                "
INSERT INTO timing_rows (node, scheduled_at, started_at, finished_at, duration_ms, priority,
                         schedule, cycle, mode, attempt, status, exit_code, cost_usd, note)
SELECT $1::text, * FROM unnest($2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
    $5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[], $11::text[],
    $12::int[], $13::float8[], $14::text[])
ON CONFLICT DO NOTHING",
                &params,
            )
            .await?;
        Ok(inserted)
    }

    /// The latest `finished_at` among the rows `node` mirrored: where a resend from its TSV
    /// starts.
    pub async fn last_mirrored(&self, node: &str) -> Result<Option<DateTime<Utc>>, DbError> {
        Ok(self
            .client
            .query_one(
                "SELECT max(finished_at) FROM timing_rows WHERE node = $1::text",
                &[&node],
            )
            .await?
            .get(0))
    }

    /// Rows of the cluster (`report --cluster`), oldest first, with the node of each.
    pub async fn timing_rows(
        &self,
        since: Option<DateTime<Utc>>,
        schedule: Option<&str>,
    ) -> Result<Vec<(String, Row)>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT node, scheduled_at, started_at, finished_at, duration_ms, priority,
                        schedule, cycle, mode, attempt, status, exit_code, cost_usd, note
                 FROM timing_rows
                 WHERE ($1::timestamptz IS NULL OR started_at >= $1::timestamptz)
                   AND ($2::text IS NULL OR schedule = $2::text)
                 ORDER BY started_at, id",
                &[&since, &schedule],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let row = Row {
                    scheduled_at: r.get(1),
                    started_at: r.get(2),
                    finished_at: r.get(3),
                    duration_ms: r.get::<_, i64>(4).max(0) as u64,
                    priority: r.get::<_, &str>(5).parse::<Priority>().ok()?,
                    schedule: r.get(6),
                    cycle: r.get(7),
                    mode: r.get(8),
                    attempt: r.get::<_, i32>(9).max(0) as u32,
                    status: r.get::<_, &str>(10).parse::<Status>().ok()?,
                    exit_code: r.get(11),
                    cost_usd: r.get(12),
                    note: r.get(13),
                };
                Some((r.get(0), row))
            })
            .collect())
    }

    /// The node running a cycle of `schedule` with a live lease, other than `node`.
    pub async fn running_elsewhere(
        &self,
        schedule: &str,
        node: &str,
    ) -> Result<Option<String>, DbError> {
        Ok(self
            .client
            .query_opt(
                "SELECT node FROM claims WHERE schedule = $1::text AND state = 'running'
                   AND lease_until >= now() AND node <> $2::text LIMIT 1",
                &[&schedule, &node],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Cost of `schedule`'s mode rows since `since`, all nodes.
    pub async fn cost_since(&self, schedule: &str, since: DateTime<Utc>) -> Result<f64, DbError> {
        Ok(self
            .client
            .query_one(
                "SELECT coalesce(sum(cost_usd), 0)::float8 FROM timing_rows
                 WHERE schedule = $1::text AND started_at >= $2::timestamptz AND mode <> 'cycle'",
                &[&schedule, &since],
            )
            .await?
            .get(0))
    }

    pub async fn escalate(
        &self,
        schedule: &str,
        fingerprint: &str,
        failures: u32,
        node: &str,
    ) -> Result<(), DbError> {
        let failures = i32::try_from(failures).unwrap_or(i32::MAX);
        self.client
            .execute(
                "INSERT INTO escalations (schedule, fingerprint, failures, node)
                 VALUES ($1::text, $2::text, $3::int, $4::text)
                 ON CONFLICT (schedule) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                    failures = EXCLUDED.failures, node = EXCLUDED.node, escalated_at = now()",
                &[&schedule, &fingerprint, &failures, &node],
            )
            .await?;
        Ok(())
    }

    /// Lifts an escalation; false when the schedule was not escalated.
    pub async fn resume(&self, schedule: &str) -> Result<bool, DbError> {
        Ok(self
            .client
            .execute(
                "DELETE FROM escalations WHERE schedule = $1::text",
                &[&schedule],
            )
            .await?
            == 1)
    }

    /// Lifts a rate-limit pause before its end (`resume`); false when there was none.
    pub async fn unpause(&self, schedule: &str) -> Result<bool, DbError> {
        Ok(self
            .client
            .execute("DELETE FROM pauses WHERE schedule = $1::text", &[&schedule])
            .await?
            == 1)
    }

    pub async fn escalations(&self) -> Result<Vec<Escalation>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT schedule, fingerprint, failures, node, escalated_at FROM escalations
                 ORDER BY schedule",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Escalation {
                schedule: r.get(0),
                fingerprint: r.get(1),
                failures: r.get::<_, i32>(2).max(0) as u32,
                node: r.get(3),
                escalated_at: r.get(4),
            })
            .collect())
    }

    /// Pauses `schedule` until `until` (a later pause in force is kept).
    pub async fn pause(
        &self,
        schedule: &str,
        until: DateTime<Utc>,
        reason: &str,
        node: &str,
    ) -> Result<(), DbError> {
        self.client
            .execute(
                "INSERT INTO pauses (schedule, until, reason, node)
                 VALUES ($1::text, $2::timestamptz, $3::text, $4::text)
                 ON CONFLICT (schedule) DO UPDATE SET until = EXCLUDED.until,
                    reason = EXCLUDED.reason, node = EXCLUDED.node, set_at = now()
                 WHERE pauses.until < EXCLUDED.until",
                &[&schedule, &until, &clean(reason), &node],
            )
            .await?;
        Ok(())
    }

    /// The pauses in force.
    pub async fn pauses(&self) -> Result<Vec<Pause>, DbError> {
        let rows = self
            .client
            .query(
                "SELECT schedule, until, reason, node FROM pauses WHERE until > now()
                 ORDER BY schedule",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Pause {
                schedule: r.get(0),
                until: r.get(1),
                reason: r.get(2),
                node: r.get(3),
            })
            .collect())
    }

    /// The schedules hash of more than half of the live nodes.
    pub async fn majority_hash(&self) -> Result<Option<String>, DbError> {
        Ok(self
            .client
            .query_opt(
                "SELECT schedules_hash FROM nodes
                 WHERE stopped_at IS NULL AND heartbeat >= now() - lease_ms * interval '1 millisecond'
                 GROUP BY schedules_hash
                 HAVING 2 * count(*) > (SELECT count(*) FROM nodes
                     WHERE stopped_at IS NULL
                       AND heartbeat >= now() - lease_ms * interval '1 millisecond')",
                &[],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Everything `status --cluster` shows.
    pub async fn status(&self) -> Result<ClusterStatus, DbError> {
        let db_now = self.db_now().await?;
        let node_rows = self
            .client
            .query(
                "SELECT name, instance_id, version, schedules_hash, started_at, heartbeat,
                        extract(epoch FROM now() - heartbeat)::float8, running_cycles, stopped_at,
                        (stopped_at IS NULL
                         AND heartbeat >= now() - lease_ms * interval '1 millisecond')
                 FROM nodes ORDER BY name",
                &[],
            )
            .await?;
        let majority_hash = self.majority_hash().await?;
        let nodes = node_rows
            .iter()
            .map(|r| {
                let live: bool = r.get(9);
                let hash: String = r.get(3);
                NodeStatus {
                    name: r.get(0),
                    instance_id: r.get(1),
                    version: r.get(2),
                    hash_differs: live && majority_hash.as_ref() != Some(&hash),
                    schedules_hash: hash,
                    started_at: r.get(4),
                    heartbeat: r.get(5),
                    heartbeat_age: secs(r.get(6)),
                    running_cycles: r.get::<_, i32>(7).max(0) as u32,
                    stopped_at: r.get(8),
                    live,
                }
            })
            .collect();
        let running = self
            .client
            .query(
                "SELECT schedule, scheduled_at, attempt, node, cycle, claimed_at, lease_until,
                        lease_until < now()
                 FROM claims WHERE state = 'running' ORDER BY schedule, scheduled_at, attempt",
                &[],
            )
            .await?
            .iter()
            .map(|r| RunningClaim {
                key: claim_key(r),
                node: r.get(3),
                cycle: r.get(4),
                claimed_at: r.get(5),
                lease_until: r.get(6),
                expired: r.get(7),
            })
            .collect();
        let last_cycles = self
            .client
            .query(
                "SELECT DISTINCT ON (schedule) schedule, scheduled_at, attempt, node, state, status
                 FROM claims ORDER BY schedule, scheduled_at DESC, attempt DESC",
                &[],
            )
            .await?
            .iter()
            .map(|r| LastCycle {
                key: claim_key(r),
                node: r.get(3),
                state: r.get(4),
                status: r.get(5),
            })
            .collect();
        Ok(ClusterStatus {
            db_now,
            nodes,
            majority_hash,
            running,
            last_cycles,
            escalations: self.escalations().await?,
            pauses: self.pauses().await?,
        })
    }

    /// Deletes what is older than `retention`: ended claims, mirrored rows, nodes gone that
    /// long, and pauses over that long.
    pub async fn retain(&self, retention: Duration) -> Result<Retained, DbError> {
        let ms = millis(retention);
        let claims = self
            .client
            .execute(
                "DELETE FROM claims WHERE state <> 'running'
                   AND claimed_at < now() - $1::bigint * interval '1 millisecond'",
                &[&ms],
            )
            .await?;
        let rows = self
            .client
            .execute(
                "DELETE FROM timing_rows
                 WHERE finished_at < now() - $1::bigint * interval '1 millisecond'",
                &[&ms],
            )
            .await?;
        let nodes = self
            .client
            .execute(
                "DELETE FROM nodes WHERE heartbeat < now() - $1::bigint * interval '1 millisecond'",
                &[&ms],
            )
            .await?;
        self.client
            .execute(
                "DELETE FROM pauses WHERE until < now() - $1::bigint * interval '1 millisecond'",
                &[&ms],
            )
            .await?;
        Ok(Retained {
            claims,
            rows,
            nodes,
        })
    }

    /// Runs SQL as is: for tests that age leases or inspect tables.
    pub async fn execute_raw(&self, sql: &str) -> Result<(), DbError> {
        Ok(self.client.batch_execute(sql).await?)
    }

    /// Runs a query as is and returns its rows (tests).
    pub async fn query_raw(&self, sql: &str) -> Result<Vec<PgRow>, DbError> {
        Ok(self.client.query(sql, &[]).await?)
    }
}

/// Applies the migrations this database lacks, in one transaction under an advisory lock.
/// Returns the versions applied (none when another node got there first).
async fn migrate(client: &mut Client) -> Result<Vec<i32>, DbError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1::bigint)",
        &[&MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&found) = done.iter().filter(|&&v| v > known).max() {
        return Err(DbError::SchemaTooNew { found, known });
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2::text)",
            &[&version, &name],
        )
        .await?;
        applied.push(version);
    }
    tx.commit().await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "cluster: database schema migrated");
    }
    Ok(applied)
}

fn claim_key(row: &PgRow) -> ClaimKey {
    ClaimKey {
        schedule: row.get(0),
        scheduled_at: row.get(1),
        attempt: row.get::<_, i32>(2).max(1) as u32,
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or_default()
}

/// Cut to whole milliseconds, the TSV's precision.
fn to_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

/// An error and its sources: tokio-postgres says "error performing TLS handshake" and keeps
/// the why (an unknown issuer, a name mismatch) in the source.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// PostgreSQL refuses NUL in `text`.
fn clean(s: &str) -> String {
    s.replace('\0', " ")
}
