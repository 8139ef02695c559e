-- The first schema of the agent-loop store (SPEC §9). Migrations are append-only: never edit
-- this file once released, add 0002_... instead (sqlx refuses a changed, applied migration).
--
-- Conventions: ids are TEXT (hyphenated lowercase UUIDs, so UUIDv7 ids sort by creation),
-- timestamps are INTEGER milliseconds since the Unix epoch, JSON is TEXT, enums are stored in
-- their canonical spelling (loop_engine::domain). Tables are STRICT so a wrong type is an
-- error at write time, not a surprise at read time.

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
    config              TEXT    NOT NULL CHECK (json_valid(config)),
    iterations_run      INTEGER NOT NULL CHECK (iterations_run >= 0),
    tasks_done          INTEGER NOT NULL CHECK (tasks_done >= 0),
    tasks_total         INTEGER NOT NULL CHECK (tasks_total >= 0),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    -- The lease: who works the run and until when. Only claim/renew/release write these.
    worker_id           TEXT,
    lease_expires_at    INTEGER
) STRICT;

-- Listing newest first (keyset pagination on (created_at, id)).
CREATE INDEX runs_by_created ON runs (created_at, id);
-- Listing one workspace newest first.
CREATE INDEX runs_by_workspace ON runs (workspace_root, created_at, id);
-- Filtering and counting by status.
CREATE INDEX runs_by_status ON runs (status, created_at, id);
-- The claim queue: only PENDING and RUNNING runs can be claimable, walked in creation order
-- in either direction until the first one that qualifies.
CREATE INDEX runs_claimable ON runs (created_at, id)
    WHERE status IN ('PENDING', 'RUNNING');

CREATE TABLE steps (
    id               TEXT    NOT NULL PRIMARY KEY,
    run_id           TEXT    NOT NULL REFERENCES runs (id),
    seq              INTEGER NOT NULL CHECK (seq >= 0),
    iteration        INTEGER NOT NULL CHECK (iteration >= 0),
    label            TEXT    NOT NULL,
    phase            TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN
                         ('QUEUED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED', 'RETRYING', 'CANCELED')),
    attempt          INTEGER NOT NULL CHECK (attempt >= 0),
    started_at       INTEGER,
    ended_at         INTEGER,
    exit_code        INTEGER,
    reason           TEXT,
    prompt_path      TEXT,
    output_path      TEXT,
    head_before      TEXT,
    head_after       TEXT,
    agent_pid        INTEGER CHECK (agent_pid >= 0),
    agent_start_time INTEGER CHECK (agent_start_time >= 0),
    usage            TEXT    CHECK (usage IS NULL OR json_valid(usage)),
    -- Also the index of "the steps of a run in seq order".
    UNIQUE (run_id, seq)
) STRICT;

-- Events are clustered by (run_id, seq): appending finds the run's last seq with one index
-- probe, and reading a tail is one range scan. The primary key also makes duplicate seqs
-- impossible, whatever a writer does.
CREATE TABLE events (
    run_id  TEXT    NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL CHECK (seq >= 1),
    step_id TEXT    REFERENCES steps (id),
    kind    TEXT    NOT NULL,
    ts      INTEGER NOT NULL,
    payload TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE artifacts (
    id          INTEGER NOT NULL PRIMARY KEY,
    run_id      TEXT    NOT NULL REFERENCES runs (id),
    kind        TEXT    NOT NULL,
    location    TEXT    NOT NULL CHECK (location IN ('workspace', 'global')),
    path        TEXT    NOT NULL,
    checksum    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    -- Recording a path again updates it; also the index of "the artifacts of a run".
    UNIQUE (run_id, location, path)
) STRICT;
