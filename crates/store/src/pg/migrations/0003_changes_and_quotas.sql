-- Control-plane changes, in order: every node reads the ones it has not seen (NATS carries
-- them at once; this log is what a node that missed a signal catches up from).
CREATE TABLE changes (
    seq         BIGSERIAL PRIMARY KEY,
    -- the incarnation that made the change
    origin      TEXT COLLATE "C" NOT NULL,
    account     TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C",
    path        TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX changes_at ON changes (at);

-- An account's concurrency, split among the nodes: each node admits unreserved invocations of
-- the account up to its grant; the grants never add up to more than the account's limit.
CREATE TABLE quota_grants (
    account     TEXT COLLATE "C" NOT NULL,
    incarnation TEXT COLLATE "C" NOT NULL,
    granted     BIGINT NOT NULL,
    PRIMARY KEY (account, incarnation)
);
CREATE INDEX quota_grants_by_incarnation ON quota_grants (incarnation);
