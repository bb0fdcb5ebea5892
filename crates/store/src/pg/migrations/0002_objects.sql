-- Object storage for the cluster: buckets (global names, one owning account), objects (keys as
-- bytes, compared byte-wise as S3 orders them; bytes up to 64 KB inline), multipart uploads,
-- the outbox of object events (claimed by one node at a time), and the bytes of larger
-- objects and parts in 1 MiB chunks.

CREATE TABLE buckets (
    name          TEXT COLLATE "C" PRIMARY KEY,
    account       TEXT COLLATE "C" NOT NULL,
    created_ms    BIGINT NOT NULL,
    notifications TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX buckets_by_account ON buckets (account);
CREATE TABLE objects (
    bucket      TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
    key         BYTEA NOT NULL,
    -- the blob holding the bytes, or '' when they are in `data`
    blob        TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    attrs       TEXT NOT NULL,
    data        BYTEA,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE uploads (
    id          TEXT COLLATE "C" PRIMARY KEY,
    bucket      TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
    key         BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL,
    attrs       TEXT NOT NULL
);
CREATE TABLE parts (
    upload      TEXT COLLATE "C" NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    blob        TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    etag        TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    PRIMARY KEY (upload, number)
);
CREATE TABLE object_outbox (
    id            BIGSERIAL PRIMARY KEY,
    event         TEXT NOT NULL,
    -- the node incarnation handing it over, and until when
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ
);
CREATE SEQUENCE object_sequencer;
CREATE TABLE object_blobs (
    id          TEXT COLLATE "C" NOT NULL,
    idx         INTEGER NOT NULL,
    bytes       BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id, idx)
);
ALTER TABLE object_blobs ALTER COLUMN bytes SET STORAGE EXTERNAL;
