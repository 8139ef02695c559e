-- The PostgreSQL schema of the agent-loop store (SPEC §9, §14): the same tables and columns as
-- the SQLite migrations 0001..0004, for several loopd hosts sharing one database. Migrations
-- are append-only: never edit this file once released, add 0002_... instead.
--
-- Conventions as in SQLite: ids are TEXT (hyphenated lowercase UUIDv7), timestamps BIGINT
-- milliseconds since the Unix epoch, JSON is TEXT (kept byte for byte as the engine wrote
-- it), enums in their canonical spelling.

CREATE TABLE runs (
    id                  TEXT    NOT NULL PRIMARY KEY,
    name                TEXT    NOT NULL,
    name_source         TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN
                            ('PENDING', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'CANCELED')),
    exit_reason         TEXT,
    failure             TEXT,
    workspace_root      TEXT    NOT NULL,
    spec_path           TEXT    NOT NULL,
    plan_path           TEXT    NOT NULL,
    base_branch         TEXT    NOT NULL,
    run_branch          TEXT    NOT NULL,
    merge_target_branch TEXT,
    merge_strategy      TEXT    NOT NULL,
    worktree_path       TEXT    NOT NULL,
    config              TEXT    NOT NULL,
    iterations_run      BIGINT  NOT NULL CHECK (iterations_run >= 0),
    tasks_done          BIGINT  NOT NULL CHECK (tasks_done >= 0),
    tasks_total         BIGINT  NOT NULL CHECK (tasks_total >= 0),
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    -- The lease: who works the run, until when, and the fencing token of the last claim.
    -- Only claim/renew/release write these.
    worker_id           TEXT,
    lease_expires_at    BIGINT,
    lease_epoch         BIGINT  NOT NULL DEFAULT 0 CHECK (lease_epoch >= 0),
    review_status       TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (review_status IN ('pending', 'merged', 'scrapped', 'pr_created')),
    review_action_at    BIGINT,
    merge_commit        TEXT,
    pr_url              TEXT
);

CREATE INDEX runs_by_created ON runs (created_at, id);
CREATE INDEX runs_by_workspace ON runs (workspace_root, created_at, id);
CREATE INDEX runs_by_status ON runs (status, created_at, id);
-- The claim queue: only PENDING and RUNNING runs can be claimable.
CREATE INDEX runs_claimable ON runs (created_at, id) WHERE status IN ('PENDING', 'RUNNING');

CREATE TABLE steps (
    id               TEXT    NOT NULL PRIMARY KEY,
    run_id           TEXT    NOT NULL REFERENCES runs (id),
    seq              BIGINT  NOT NULL CHECK (seq >= 0),
    iteration        BIGINT  NOT NULL CHECK (iteration >= 0),
    label            TEXT    NOT NULL,
    phase            TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN
                         ('QUEUED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED', 'RETRYING', 'CANCELED')),
    attempt          BIGINT  NOT NULL CHECK (attempt >= 0),
    started_at       BIGINT,
    ended_at         BIGINT,
    exit_code        BIGINT,
    reason           TEXT,
    prompt_path      TEXT,
    output_path      TEXT,
    head_before      TEXT,
    head_after       TEXT,
    agent_pid        BIGINT  CHECK (agent_pid >= 0),
    agent_start_time BIGINT  CHECK (agent_start_time >= 0),
    usage            TEXT,
    resources        TEXT,
    UNIQUE (run_id, seq)
);

-- Gap-free per-run event numbers under concurrent writers: an append increments its run's
-- counter row (which locks it until the append commits) and inserts with that number in the
-- same transaction, so numbers are handed out one writer at a time and a rolled-back append
-- gives its number back.
CREATE TABLE event_counters (
    run_id   TEXT   NOT NULL PRIMARY KEY REFERENCES runs (id),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0)
);

CREATE TABLE events (
    run_id  TEXT   NOT NULL REFERENCES runs (id),
    seq     BIGINT NOT NULL CHECK (seq >= 1),
    step_id TEXT   REFERENCES steps (id),
    kind    TEXT   NOT NULL,
    ts      BIGINT NOT NULL,
    payload TEXT   NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE artifacts (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      TEXT    NOT NULL REFERENCES runs (id),
    kind        TEXT    NOT NULL,
    location    TEXT    NOT NULL CHECK (location IN ('workspace', 'global')),
    path        TEXT    NOT NULL,
    checksum    TEXT    NOT NULL,
    recorded_at BIGINT  NOT NULL,
    UNIQUE (run_id, location, path)
);

-- Wake-ups for every host (LISTEN/NOTIFY, SPEC §14): a new run, a run whose status or holder
-- changed (freed, finished, claimed) on channel `loop_runs` with payload `<run id> <status>`,
-- and every appended event on `loop_events` with payload `<run id> <seq>`. Notifications are
-- delivered at commit, so a listener that reads after one sees the change.
CREATE FUNCTION loop_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loop_runs', NEW.id || ' ' || NEW.status);
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_notify_insert AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION loop_notify_run();
CREATE TRIGGER runs_notify_update AFTER UPDATE ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.worker_id IS DISTINCT FROM NEW.worker_id)
    EXECUTE FUNCTION loop_notify_run();

CREATE FUNCTION loop_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loop_events', NEW.run_id || ' ' || NEW.seq);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION loop_notify_event();
