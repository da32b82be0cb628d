-- The cluster's tables (SPEC §11). Times come from the database's clock (now()), never a
-- node's, except the columns copied from a node's timing rows.

-- One row per node name. A node is live while stopped_at is null and its heartbeat is
-- younger than its own lease.
CREATE TABLE nodes (
    name            text PRIMARY KEY,
    instance_id     text NOT NULL,
    session         text NOT NULL,          -- one per process: a restart gets a new one
    version         text NOT NULL,
    schedules_hash  text NOT NULL,
    lease_ms        bigint NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat       timestamptz NOT NULL DEFAULT now(),
    running_cycles  integer NOT NULL DEFAULT 0,
    stopped_at      timestamptz
);

-- Fencing tokens: every claim gets a new one, so a token names one holding of one claim.
CREATE SEQUENCE claim_fence AS bigint;

-- At most one run per (schedule, instant, attempt): the primary key decides every race.
CREATE TABLE claims (
    schedule        text NOT NULL,
    scheduled_at    timestamptz NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    node            text NOT NULL,
    session         text NOT NULL,
    cycle           text NOT NULL,
    state           text NOT NULL CHECK (state IN ('running', 'done', 'interrupted')),
    fence           bigint NOT NULL UNIQUE DEFAULT nextval('claim_fence'),
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text,                   -- the cycle's status, once it ended
    released        boolean NOT NULL DEFAULT false,  -- interrupted by its own node (stop, lost lease)
    taken_over_by   text,                   -- the survivor that interrupted it, or retried it
    retried         boolean NOT NULL DEFAULT false,  -- attempt + 1 was claimed
    PRIMARY KEY (schedule, scheduled_at, attempt)
);
CREATE INDEX claims_running ON claims (schedule) WHERE state = 'running';
CREATE INDEX claims_expiry ON claims (lease_until) WHERE state = 'running';
CREATE INDEX claims_node_running ON claims (node) WHERE state = 'running';
CREATE INDEX claims_to_retry ON claims (schedule) WHERE released AND NOT retried;
CREATE INDEX claims_claimed_at ON claims (claimed_at);

-- Every row of every node's task_timing.tsv: its 13 columns and the node that wrote it.
-- A retried insert is a no-op: a row is one (node, cycle, mode, attempt, started_at,
-- status); started_at is in the key because fallbacks write several rows of one mode and
-- attempt (SPEC §8), at distinct starts.
CREATE TABLE timing_rows (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node            text NOT NULL,
    scheduled_at    timestamptz,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    duration_ms     bigint NOT NULL,
    priority        text NOT NULL,
    schedule        text NOT NULL,
    cycle           text NOT NULL,
    mode            text NOT NULL,
    attempt         integer NOT NULL,
    status          text NOT NULL,
    exit_code       integer,
    cost_usd        double precision,
    note            text NOT NULL,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (node, cycle, mode, attempt, started_at, status)
);
CREATE INDEX timing_rows_schedule_started ON timing_rows (schedule, started_at);
CREATE INDEX timing_rows_started ON timing_rows (started_at);
CREATE INDEX timing_rows_node_finished ON timing_rows (node, finished_at);

-- Cluster-wide escalation: a schedule paused after max_failures, until `resume` or until
-- its entry changes (the fingerprint no longer matches the node's).
CREATE TABLE escalations (
    schedule        text PRIMARY KEY,
    fingerprint     text NOT NULL,
    failures        integer NOT NULL,
    node            text NOT NULL,
    escalated_at    timestamptz NOT NULL DEFAULT now()
);

-- Cluster-wide rate-limit pauses (SPEC §8).
CREATE TABLE pauses (
    schedule        text PRIMARY KEY,
    until           timestamptz NOT NULL,
    reason          text NOT NULL,
    node            text NOT NULL,
    set_at          timestamptz NOT NULL DEFAULT now()
);
