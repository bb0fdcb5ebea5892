-- Stratus cluster schema, version 1. Text is compared byte-wise (COLLATE "C"), as SQLite does.
-- Every account's rows live in the same tables, keyed by
-- `account`; every statement of the store names the account it serves.

CREATE TABLE functions (
    account      TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    created_ms   BIGINT NOT NULL,
    tags         TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    -- the number of the last published version (versions are never reused)
    last_version BIGINT NOT NULL DEFAULT 0,
    -- PutFunctionConcurrency; NULL when the function has no reservation
    reserved_concurrency BIGINT,
    PRIMARY KEY (account, name)
);
CREATE TABLE versions (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    version     TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    code_sha256 TEXT COLLATE "C" NOT NULL,
    code_size   BIGINT NOT NULL,
    PRIMARY KEY (account, function, version),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE aliases (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, function, name),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE event_invoke_configs (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    qualifier   TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, function, qualifier),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE provisioned_configs (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    qualifier   TEXT COLLATE "C" NOT NULL,
    requested   BIGINT NOT NULL,
    last_modified_ms BIGINT NOT NULL,
    PRIMARY KEY (account, function, qualifier),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE async_events (
    id              BIGSERIAL PRIMARY KEY,
    account         TEXT COLLATE "C" NOT NULL,
    request_id      TEXT COLLATE "C" NOT NULL,
    function        TEXT COLLATE "C" NOT NULL,
    qualifier       TEXT COLLATE "C",
    payload         BYTEA NOT NULL,
    received_ms     BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- the node incarnation delivering it, NULL when nobody is; a dead incarnation's events
    -- are made due again by whoever declares it dead
    leased_by       TEXT COLLATE "C",
    trace           TEXT COLLATE "C",
    trigger         TEXT COLLATE "C",
    delivery        TEXT COLLATE "C"
);
CREATE INDEX async_events_due ON async_events (account, next_attempt_ms);
CREATE INDEX async_events_leased ON async_events (leased_by) WHERE leased_by IS NOT NULL;
-- one execution per scheduled time: a schedule's tick has a request id derived from it
CREATE UNIQUE INDEX async_events_schedule_tick ON async_events (account, request_id) WHERE trigger = 'schedule';
ALTER TABLE async_events SET (autovacuum_vacuum_scale_factor = 0.02);
CREATE TABLE function_urls (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    -- the alias, or '' for the unqualified function
    qualifier   TEXT COLLATE "C" NOT NULL,
    url_id      TEXT COLLATE "C" NOT NULL UNIQUE,
    config      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, function, qualifier),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE http_routes (
    account     TEXT COLLATE "C" NOT NULL,
    route_key   TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, route_key)
);
CREATE TABLE function_policies (
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    qualifier   TEXT COLLATE "C" NOT NULL,
    policy      TEXT COLLATE "C" NOT NULL,
    revision_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, function, qualifier),
    FOREIGN KEY (account, function) REFERENCES functions (account, name) ON DELETE CASCADE
);
CREATE TABLE layers (
    account      TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    last_version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, name)
);
CREATE TABLE layer_versions (
    account     TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    code_sha256 TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (account, name, version),
    FOREIGN KEY (account, name) REFERENCES layers (account, name)
);
CREATE TABLE schedule_groups (
    account     TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE schedules (
    account     TEXT COLLATE "C" NOT NULL,
    group_name  TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    next_ms     BIGINT,
    last_fired_ms BIGINT,
    version     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, group_name, name)
);
CREATE INDEX schedules_next ON schedules (account, next_ms) WHERE next_ms IS NOT NULL;
CREATE TABLE event_source_mappings (
    account     TEXT COLLATE "C" NOT NULL,
    uuid        TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    config      TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL,
    PRIMARY KEY (account, uuid)
);
CREATE TABLE esm_checkpoints (
    account     TEXT COLLATE "C" NOT NULL,
    uuid        TEXT COLLATE "C" NOT NULL,
    partition   TEXT COLLATE "C" NOT NULL,
    position    TEXT COLLATE "C" NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (account, uuid, partition)
);

-- Code packages and layer archives, stored once per account by SHA-256, in 1 MiB chunks
-- (rows stream, back up with everything else and commit with the version that uses them).
CREATE TABLE code_chunks (
    account     TEXT COLLATE "C" NOT NULL,
    sha256      TEXT COLLATE "C" NOT NULL,
    idx         INTEGER NOT NULL,
    bytes       BYTEA NOT NULL,
    PRIMARY KEY (account, sha256, idx)
);
ALTER TABLE code_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE TABLE code_packages (
    account     TEXT COLLATE "C" NOT NULL,
    sha256      TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    chunks      INTEGER NOT NULL,
    PRIMARY KEY (account, sha256)
);

-- Accounts and access keys (secrets sealed with the cluster's sealing key).
CREATE TABLE accounts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE access_keys (
    access_key_id TEXT COLLATE "C" PRIMARY KEY,
    account       TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    sealed_secret BYTEA NOT NULL,
    nonce         BYTEA NOT NULL,
    created_ms    BIGINT NOT NULL,
    revoked_ms    BIGINT
);
CREATE TABLE function_keys (
    account       TEXT COLLATE "C" PRIMARY KEY REFERENCES accounts (id),
    access_key_id TEXT COLLATE "C" NOT NULL REFERENCES access_keys (access_key_id)
);
-- Cluster-wide secrets: the sealing key of access keys, the key that signs node-to-node hops.
CREATE TABLE cluster_secrets (
    name        TEXT COLLATE "C" PRIMARY KEY,
    value       BYTEA NOT NULL
);

-- The metering ledger: append-only.
CREATE TABLE invocations (
    seq           BIGSERIAL PRIMARY KEY,
    request_id    TEXT COLLATE "C" NOT NULL,
    account       TEXT COLLATE "C" NOT NULL,
    function      TEXT COLLATE "C" NOT NULL,
    version       TEXT COLLATE "C" NOT NULL,
    trigger       TEXT COLLATE "C" NOT NULL,
    architecture  TEXT COLLATE "C" NOT NULL,
    start_us      BIGINT NOT NULL,
    end_us        BIGINT NOT NULL,
    duration_us   BIGINT NOT NULL,
    init_us       BIGINT,
    billed_ms     BIGINT NOT NULL,
    memory_mb     BIGINT NOT NULL,
    max_memory_mb BIGINT NOT NULL,
    cold          BOOLEAN NOT NULL,
    outcome       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX invocations_by_account_time ON invocations (account, start_us);
CREATE INDEX invocations_by_request ON invocations (request_id);
CREATE FUNCTION invocations_append_only() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$;
CREATE TRIGGER invocations_no_change BEFORE UPDATE OR DELETE ON invocations
    FOR EACH ROW EXECUTE FUNCTION invocations_append_only();

-- Cluster membership: one row per node incarnation (a restart is a new incarnation).
CREATE TABLE nodes (
    incarnation  TEXT COLLATE "C" PRIMARY KEY,
    node_id      TEXT COLLATE "C" NOT NULL,
    -- where other nodes reach its API (forwarded invocations, log reads)
    address      TEXT COLLATE "C" NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- what it reports of itself: load, what it holds (JSON)
    report       TEXT COLLATE "C" NOT NULL DEFAULT '{}'
);
-- Leases of singletons (a mapping's poller): the holder's incarnation, a token that grows
-- with every acquisition (writes it protects check it), and an expiry on the database's clock.
CREATE TABLE leases (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      TEXT COLLATE "C",
    token       BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
