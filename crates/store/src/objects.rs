//! Object storage: buckets, objects and multipart uploads of every account, under
//! `<data-dir>/objects/`:
//!
//! ```text
//! objects.db          buckets (with their owner and notification rules), objects (the bytes
//!                     of those up to 64 KB inline), uploads, and the outbox of object events
//!                     not yet handed to a function
//! blobs/<xx>/<id>     larger objects' and parts' contents, named by a random id (never by the key)
//! staging/<id>        uploads in progress
//! ```
//!
//! A write goes to `staging/`, is renamed into `blobs/` and only then becomes visible, in one
//! transaction that also records its notification events: a reader sees the old object or the
//! new one, never part of one, and an acknowledged write always has its events. Anything a
//! crash leaves in `staging/` or unreferenced in `blobs/` is removed at the next start.
//! Commits use WAL with `synchronous=NORMAL`: they survive the process being killed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use model::objects::{NotificationRule, ObjectChange, ObjectEvent};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name          TEXT PRIMARY KEY,
    account       TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    notifications TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS objects (
    bucket      TEXT NOT NULL REFERENCES buckets(name),
    -- the key's UTF-8 bytes: compared byte by byte, as S3 orders keys
    key         BLOB NOT NULL,
    -- the file holding the bytes, or '' when they are in `data`
    blob        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    attrs       TEXT NOT NULL,
    -- the bytes of a small object (at most INLINE_MAX), kept in the row
    data        BLOB,
    PRIMARY KEY (bucket, key)
);
CREATE TABLE IF NOT EXISTS uploads (
    id          TEXT PRIMARY KEY,
    bucket      TEXT NOT NULL REFERENCES buckets(name),
    key         BLOB NOT NULL,
    created_ms  INTEGER NOT NULL,
    attrs       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload      TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    blob        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    etag        TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload, number)
);
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
";

/// What S3 keeps with an object besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_redirect_location: Option<String>,
    /// `x-amz-meta-*`, names lowercased.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Checksums the writer sent (algorithm → base64 value), returned as sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub modified_ms: i64,
    pub attrs: ObjectAttrs,
    blob: String,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    pub name: String,
    pub account: String,
    pub created_ms: i64,
}

/// One part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    pub etag: String,
    pub modified_ms: i64,
    blob: String,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub created_ms: i64,
    pub attrs: ObjectAttrs,
}

/// Bytes written to `staging/`, not yet part of anything.
#[derive(Debug)]
pub struct Staged {
    pub path: PathBuf,
    id: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Committed files have been renamed away; anything else is abandoned.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Who changed an object, for its events.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    pub source_ip: String,
    pub principal: String,
    pub request_id: String,
    /// Invocations that led to this write (from the writer's trace header).
    pub depth: u32,
    pub trace: Option<String>,
    /// Write only if the key holds no object (`If-None-Match: *`), checked in the commit.
    pub if_absent: bool,
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    /// Where the next page starts, when there is one (opaque to callers).
    pub next: Option<String>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("The specified bucket does not exist")]
    NoSuchBucket,
    #[error("The specified key does not exist.")]
    NoSuchKey,
    #[error(
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
    )]
    NoSuchUpload,
    #[error("The requested bucket name is not available.")]
    BucketAlreadyExists,
    #[error("Your previous request to create the named bucket succeeded and you already own it.")]
    BucketAlreadyOwnedByYou,
    #[error("The bucket you tried to delete is not empty")]
    BucketNotEmpty,
    #[error("One or more of the specified parts could not be found: part {0}")]
    InvalidPart(u32),
    #[error("The list of parts was not in ascending order.")]
    InvalidPartOrder,
    #[error("Your proposed upload is smaller than the minimum allowed size (part {0})")]
    EntityTooSmall(u32),
    #[error("At least one of the pre-conditions you specified did not hold")]
    PreconditionFailed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for ObjectError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

impl From<std::io::Error> for ObjectError {
    fn from(e: std::io::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The rows behind the object store: SQLite's `objects.db`, or the cluster's database. The
/// bytes of larger objects are files handled by [`ObjectStore`] itself; these are the
/// metadata operations, each one transaction.
pub(crate) trait ObjectRows: Send + Sync {
    fn create_bucket(&self, name: &str, account: &str, now: i64) -> Result<(), ObjectError>;
    fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, ObjectError>;
    fn list_buckets(&self, account: &str) -> Result<Vec<BucketInfo>, ObjectError>;
    /// Deletes an empty bucket and its uploads; returns their parts' blobs.
    fn delete_bucket(&self, name: &str) -> Result<Vec<String>, ObjectError>;
    /// The bucket's notification rules as stored (JSON), `None` without such a bucket.
    fn notifications(&self, bucket: &str) -> Result<Option<String>, ObjectError>;
    fn set_notifications(&self, bucket: &str, rules: &str) -> Result<bool, ObjectError>;
    /// An object (and its inline bytes when `data`), or why it is missing.
    fn get(&self, bucket: &str, key: &str, data: bool) -> Result<(ObjectInfo, Option<Vec<u8>>), ObjectError>;
    /// Makes an object what `w` says, with its events; returns the blob it replaced, the
    /// parts' blobs of the upload it finished, the number of events and its time.
    fn record(&self, w: &Recording<'_>) -> Result<Recorded, ObjectError>;
    /// Deletes an object with its events; returns its blob if it existed (`""` when inline).
    fn delete(&self, bucket: &str, key: &str, writer: &Writer) -> Result<Option<String>, ObjectError>;
    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError>;
    /// Up to 256 objects of `bucket` from `prefix` on, after `cursor`, in key order.
    fn page(&self, bucket: &str, prefix: &[u8], cursor: &[u8]) -> Result<Vec<ObjectInfoRow>, ObjectError>;
    fn create_upload(&self, upload: &UploadInfo) -> Result<(), ObjectError>;
    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<UploadInfo>, ObjectError>;
    /// Records a part; returns the blob of the part it replaced.
    fn put_part(&self, upload: &str, part: &PartInfo) -> Result<Option<String>, ObjectError>;
    fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, ObjectError>;
    /// Deletes an upload; returns its parts' blobs.
    fn abort_upload(&self, upload: &str) -> Result<Vec<String>, ObjectError>;
    fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, ObjectError>;
    /// Takes up to `limit` events to hand over, oldest first (in a cluster, claimed for a
    /// while, so two nodes never hand one over both).
    fn pending_events(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError>;
    fn events_done(&self, ids: &[i64]) -> Result<(), StoreError>;
    /// Every blob some object or part refers to (`None`: too many to list; keep the files).
    fn referenced_blobs(&self) -> Result<Option<HashSet<String>>, StoreError>;
}

/// A row of a listing page: key, blob, size, ETag, modification time, attributes (JSON).
pub(crate) type ObjectInfoRow = (Vec<u8>, String, i64, String, i64, String);

/// What [`ObjectRows::record`] writes.
pub(crate) struct Recording<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub blob: &'a str,
    pub data: Option<&'a [u8]>,
    pub size: u64,
    pub etag: &'a str,
    pub attrs: &'a ObjectAttrs,
    pub change: ObjectChange,
    pub writer: &'a Writer,
    pub finishing_upload: Option<&'a str>,
}

/// What [`ObjectRows::record`] did.
pub(crate) struct Recorded {
    pub old: Option<String>,
    pub dropped_parts: Vec<String>,
    pub events: usize,
    pub now: i64,
}

/// The events one change produces under a bucket's `rules` (JSON), numbered by `sequencer`
/// (asked only when some rule matches), as JSON outbox rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn events_for(
    account: &str,
    rules: &str,
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    change: ObjectChange,
    writer: &Writer,
    now: i64,
    sequencer: impl FnOnce() -> Result<i64, ObjectError>,
) -> Result<Vec<String>, ObjectError> {
    let rules: Vec<NotificationRule> = serde_json::from_str(rules).unwrap_or_default();
    let matching: Vec<&NotificationRule> = rules.iter().filter(|r| r.matches(change, key)).collect();
    if matching.is_empty() {
        return Ok(Vec::new());
    }
    let seq = sequencer()?;
    Ok(matching
        .iter()
        .map(|rule| {
            json(&ObjectEvent {
                account: account.to_string(),
                function_arn: rule.function_arn.clone(),
                configuration_id: rule.id.clone(),
                event_name: change.event_name().to_string(),
                bucket: bucket.to_string(),
                key: key.to_string(),
                size,
                etag: etag.to_string(),
                sequencer: format!("{seq:016X}"),
                time_ms: now,
                source_ip: writer.source_ip.clone(),
                principal: writer.principal.clone(),
                request_id: writer.request_id.clone(),
                depth: writer.depth,
                trace: writer.trace.clone(),
            })
        })
        .collect())
}

/// The object store. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    root: PathBuf,
    rows: Arc<dyn ObjectRows>,
    /// In a cluster, where every blob is kept for all nodes (`blobs/` is then this node's
    /// cache of them, filled on first read).
    shared: Option<crate::pg::PgObjects>,
}

fn now_ms() -> i64 {
    model::logfmt::now_ms()
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn parse_attrs(s: &str) -> ObjectAttrs {
    serde_json::from_str(s).unwrap_or_default()
}

pub(crate) fn key_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Objects up to this size keep their bytes in their row (no file to create, rename or
/// unlink: small writes are bound by those, BENCHMARKS.md).
pub const INLINE_MAX: u64 = 64 * 1024;

/// The smallest part S3 accepts, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

impl ObjectInfo {
    pub(crate) fn from_row(key: String, blob: String, size: i64, etag: String, modified_ms: i64, attrs: &str) -> Self {
        Self { key, blob, size: size.max(0) as u64, etag, modified_ms, attrs: parse_attrs(attrs) }
    }
}

impl PartInfo {
    pub(crate) fn from_row(number: u32, size: i64, etag: String, modified_ms: i64, blob: String) -> Self {
        Self { number, size: size.max(0) as u64, etag, modified_ms, blob }
    }

    pub(crate) fn blob(&self) -> &str {
        &self.blob
    }
}

impl ObjectStore {
    /// Opens `<root>` (normally `<data-dir>/objects`), removing what an interrupted write left.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        Self::prepare(root)?;
        let conn = Connection::open(root.join("objects.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let has_data: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'data'")?.exists([])?;
        if !has_data {
            conn.execute_batch("ALTER TABLE objects ADD COLUMN data BLOB")?;
        }
        let store = Self { root: root.to_path_buf(), rows: Arc::new(SqliteRows(Mutex::new(conn))), shared: None };
        let removed = store.collect_garbage()?;
        if removed > 0 {
            tracing::info!(removed, "removed object files no object or part refers to");
        }
        Ok(store)
    }

    /// The cluster's object store: buckets, objects and their bytes in the cluster's database,
    /// `<root>/blobs` a cache of them on this node. Object events are claimed in the name of
    /// `incarnation`, so one node hands each over.
    pub fn open_cluster(root: &Path, pool: &crate::pg::PgPool, incarnation: &str) -> Result<Self, StoreError> {
        Self::prepare(root)?;
        let pg = crate::pg::PgObjects::new(pool.clone(), incarnation.to_string());
        pg.sweep_orphans()?;
        Ok(Self { root: root.to_path_buf(), rows: Arc::new(pg.clone()), shared: Some(pg) })
    }

    fn prepare(root: &Path) -> Result<(), StoreError> {
        // Blobs are spread over 256 directories by the first two hex digits of their id, all
        // made now so a write only renames.
        for i in 0..=255u8 {
            std::fs::create_dir_all(root.join("blobs").join(format!("{i:02x}")))?;
        }
        let staging = root.join("staging");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        Ok(())
    }

    /// Runs `f` on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ObjectError>
    where
        T: Send + 'static,
        F: FnOnce(&ObjectStore) -> Result<T, ObjectError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this)).await.map_err(|_| ObjectError::Store(StoreError::WorkerGone))?
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.root.join("blobs").join(&blob[..2]).join(blob)
    }

    /// A blob's file on this node, fetched from the cluster first if it is not here yet.
    fn local_blob(&self, blob: &str) -> PathBuf {
        let path = self.blob_path(blob);
        if let Some(shared) = &self.shared
            && !path.exists()
        {
            let tmp = self.root.join("staging").join(format!("fetch-{}", uuid::Uuid::new_v4().simple()));
            match shared.fetch_blob(blob, &tmp) {
                Ok(true) => {
                    if let Err(e) = std::fs::rename(&tmp, &path) {
                        tracing::warn!(blob, error = %e, "cannot cache an object's bytes");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(blob, error = %e, "cannot fetch an object's bytes from the cluster"),
            }
            let _ = std::fs::remove_file(&tmp);
        }
        path
    }

    /// Where an object's bytes are (they stay readable while open, even once replaced);
    /// `None` for a small object, whose bytes are in its row ([`ObjectStore::get`]).
    pub fn object_path(&self, object: &ObjectInfo) -> Option<PathBuf> {
        (!object.blob.is_empty()).then(|| self.local_blob(&object.blob))
    }

    pub fn part_path(&self, part: &PartInfo) -> PathBuf {
        self.local_blob(&part.blob)
    }

    /// A new file in `staging/` to write an upload into.
    pub fn stage(&self) -> Result<(Staged, std::fs::File), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let path = self.root.join("staging").join(&id);
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        Ok((Staged { path, id }, file))
    }

    /// Moves a staged file among the blobs (in a cluster, stores it for every node first);
    /// the caller records it or removes it.
    fn promote(&self, staged: &Staged) -> Result<String, StoreError> {
        if let Some(shared) = &self.shared {
            shared.put_blob(&staged.id, &staged.path)?;
        }
        std::fs::rename(&staged.path, self.blob_path(&staged.id))?;
        Ok(staged.id.clone())
    }

    fn remove_blob(&self, blob: &str) {
        if !blob.is_empty() {
            let _ = std::fs::remove_file(self.blob_path(blob));
            if let Some(shared) = &self.shared
                && let Err(e) = shared.delete_blob(blob)
            {
                tracing::warn!(blob, error = %e, "cannot delete an object's bytes from the cluster; they are swept later");
            }
        }
    }

    /// Removes staged files and blobs nothing refers to (what a crash mid-write leaves).
    pub fn collect_garbage(&self) -> Result<usize, StoreError> {
        let Some(referenced) = self.rows.referenced_blobs()? else { return Ok(0) };
        let mut removed = 0;
        for dir in std::fs::read_dir(self.root.join("blobs"))?.flatten() {
            for f in std::fs::read_dir(dir.path())?.flatten() {
                if !referenced.contains(&*f.file_name().to_string_lossy()) {
                    std::fs::remove_file(f.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    // ---- buckets ----

    pub fn create_bucket(&self, name: &str, account: &str) -> Result<BucketInfo, ObjectError> {
        let now = now_ms();
        self.rows.create_bucket(name, account, now)?;
        Ok(BucketInfo { name: name.into(), account: account.into(), created_ms: now })
    }

    pub fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, ObjectError> {
        self.rows.bucket(name)
    }

    /// The account's buckets, by name.
    pub fn list_buckets(&self, account: &str) -> Result<Vec<BucketInfo>, ObjectError> {
        self.rows.list_buckets(account)
    }

    /// Deletes an empty bucket (multipart uploads in progress are aborted with it).
    pub fn delete_bucket(&self, name: &str) -> Result<(), ObjectError> {
        for b in self.rows.delete_bucket(name)? {
            self.remove_blob(&b);
        }
        Ok(())
    }

    pub fn notifications(&self, bucket: &str) -> Result<Vec<NotificationRule>, ObjectError> {
        let text = self.rows.notifications(bucket)?.ok_or(ObjectError::NoSuchBucket)?;
        serde_json::from_str(&text).map_err(|e| ObjectError::Store(StoreError::Corrupt(e.to_string())))
    }

    pub fn set_notifications(&self, bucket: &str, rules: &[NotificationRule]) -> Result<(), ObjectError> {
        if self.rows.set_notifications(bucket, &json(&rules))? { Ok(()) } else { Err(ObjectError::NoSuchBucket) }
    }

    // ---- objects ----

    pub fn head(&self, bucket: &str, key: &str) -> Result<ObjectInfo, ObjectError> {
        Ok(self.rows.get(bucket, key, false)?.0)
    }

    /// An object and, when small, its bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Result<(ObjectInfo, Option<Vec<u8>>), ObjectError> {
        self.rows.get(bucket, key, true)
    }

    /// Makes `staged` the object `bucket/key` and records the events its bucket's rules ask
    /// for, in one transaction. Returns the object and the number of events.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        staged: Staged,
        size: u64,
        etag: &str,
        attrs: &ObjectAttrs,
        change: ObjectChange,
        writer: &Writer,
    ) -> Result<(ObjectInfo, usize), ObjectError> {
        let blob = self.promote(&staged)?;
        let result = self.record(bucket, key, &blob, None, size, etag, attrs, change, writer, None);
        if result.is_err() {
            self.remove_blob(&blob);
        }
        result
    }

    /// As [`ObjectStore::put`], for a small object whose bytes go in its row.
    #[allow(clippy::too_many_arguments)]
    pub fn put_inline(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        etag: &str,
        attrs: &ObjectAttrs,
        change: ObjectChange,
        writer: &Writer,
    ) -> Result<(ObjectInfo, usize), ObjectError> {
        self.record(bucket, key, "", Some(data), data.len() as u64, etag, attrs, change, writer, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        bucket: &str,
        key: &str,
        blob: &str,
        data: Option<&[u8]>,
        size: u64,
        etag: &str,
        attrs: &ObjectAttrs,
        change: ObjectChange,
        writer: &Writer,
        finishing_upload: Option<&str>,
    ) -> Result<(ObjectInfo, usize), ObjectError> {
        let done = self.rows.record(&Recording {
            bucket,
            key,
            blob,
            data,
            size,
            etag,
            attrs,
            change,
            writer,
            finishing_upload,
        })?;
        for b in done.old.iter().chain(&done.dropped_parts) {
            if b != blob {
                self.remove_blob(b);
            }
        }
        let info = ObjectInfo {
            key: key.to_string(),
            size,
            etag: etag.to_string(),
            modified_ms: done.now,
            attrs: attrs.clone(),
            blob: blob.to_string(),
        };
        Ok((info, done.events))
    }

    /// Deletes an object (absent is not an error, as in S3). Returns whether it existed.
    pub fn delete(&self, bucket: &str, key: &str, writer: &Writer) -> Result<bool, ObjectError> {
        let old = self.rows.delete(bucket, key, writer)?;
        if let Some(b) = &old {
            self.remove_blob(b);
        }
        Ok(old.is_some())
    }

    /// Copies an object (its bytes are copied, so either may change later on its own).
    pub fn copy(
        &self,
        from: (&str, &str),
        to: (&str, &str),
        attrs: Option<&ObjectAttrs>,
        writer: &Writer,
    ) -> Result<(ObjectInfo, usize), ObjectError> {
        let (src, data) = self.get(from.0, from.1)?;
        let attrs = attrs.cloned().unwrap_or_else(|| src.attrs.clone());
        if let Some(data) = data {
            return self.put_inline(to.0, to.1, &data, &src.etag, &attrs, ObjectChange::Copy, writer);
        }
        let (staged, mut file) = self.stage()?;
        let mut input = std::fs::File::open(self.local_blob(&src.blob))?;
        std::io::copy(&mut input, &mut file)?;
        drop(file);
        self.put(to.0, to.1, staged, src.size, &src.etag, &attrs, ObjectChange::Copy, writer)
    }

    /// A page of `bucket`'s keys in byte order: those starting with `prefix`, after `after`
    /// (a key, or a token from an earlier page), grouped by `delimiter`, at most `max`.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<Listing, ObjectError> {
        if !self.rows.bucket_exists(bucket)? {
            return Err(ObjectError::NoSuchBucket);
        }
        let mut out = Listing::default();
        if max == 0 {
            return Ok(out);
        }
        let mut cursor: Vec<u8> = after.map(<[u8]>::to_vec).unwrap_or_default();
        let delimiter = delimiter.filter(|d| !d.is_empty());
        loop {
            let rows = self.rows.page(bucket, prefix.as_bytes(), &cursor)?;
            if rows.is_empty() {
                return Ok(out);
            }
            for (key, blob, size, etag, modified_ms, attrs) in rows {
                if !key.starts_with(prefix.as_bytes()) {
                    return Ok(out); // keys are ordered: none after this one has the prefix
                }
                if out.objects.len() + out.prefixes.len() == max {
                    out.next = Some(hex::encode(&cursor));
                    return Ok(out);
                }
                let rest = &key[prefix.len()..];
                let grouped = delimiter.and_then(|d| {
                    rest.windows(d.len())
                        .position(|w| w == d.as_bytes())
                        .map(|at| key[..prefix.len() + at + d.len()].to_vec())
                });
                match grouped {
                    Some(common) => {
                        // Skip every key under this prefix: 0xFF never occurs in UTF-8. A
                        // prefix at or before `after` was listed already (a marker naming it).
                        let listed = after.is_some_and(|a| common.as_slice() <= a);
                        cursor = common.clone();
                        cursor.push(0xFF);
                        if !listed {
                            out.prefixes.push(key_string(common));
                        }
                        break;
                    }
                    None => {
                        cursor = key.clone();
                        out.objects.push(ObjectInfo::from_row(key_string(key), blob, size, etag, modified_ms, &attrs));
                    }
                }
            }
        }
    }

    // ---- multipart uploads ----

    pub fn create_upload(&self, bucket: &str, key: &str, attrs: &ObjectAttrs) -> Result<UploadInfo, ObjectError> {
        let upload = UploadInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            bucket: bucket.into(),
            key: key.into(),
            created_ms: now_ms(),
            attrs: attrs.clone(),
        };
        self.rows.create_upload(&upload)?;
        Ok(upload)
    }

    pub fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<UploadInfo, ObjectError> {
        self.rows.upload(bucket, key, id)?.ok_or(ObjectError::NoSuchUpload)
    }

    /// Records a part (replacing an earlier part of the same number).
    pub fn put_part(
        &self,
        upload: &str,
        number: u32,
        staged: Staged,
        size: u64,
        etag: &str,
    ) -> Result<(), ObjectError> {
        let blob = self.promote(&staged)?;
        let part = PartInfo { number, size, etag: etag.to_string(), modified_ms: now_ms(), blob: blob.clone() };
        match self.rows.put_part(upload, &part) {
            Ok(old) => {
                if let Some(b) = old {
                    self.remove_blob(&b);
                }
                Ok(())
            }
            Err(e) => {
                self.remove_blob(&blob);
                Err(e)
            }
        }
    }

    pub fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, ObjectError> {
        self.rows.parts(upload)
    }

    /// Joins the named parts (number, ETag as the client saw it) into the object. The parts'
    /// MD5s (raw) are handed to `etag` to make the object's ETag.
    pub fn complete_upload(
        &self,
        upload: &UploadInfo,
        chosen: &[(u32, String)],
        max_size: u64,
        writer: &Writer,
    ) -> Result<(ObjectInfo, usize), CompleteError> {
        let stored = self.parts(&upload.id)?;
        let mut picked = Vec::with_capacity(chosen.len());
        let mut last = 0;
        for (i, (number, etag)) in chosen.iter().enumerate() {
            if *number <= last {
                return Err(ObjectError::InvalidPartOrder.into());
            }
            last = *number;
            let Some(part) = stored.iter().find(|p| p.number == *number && p.etag == etag.trim_matches('"')) else {
                return Err(ObjectError::InvalidPart(*number).into());
            };
            if i + 1 < chosen.len() && part.size < MIN_PART_SIZE {
                return Err(ObjectError::EntityTooSmall(*number).into());
            }
            picked.push(part.clone());
        }
        if picked.is_empty() {
            return Err(ObjectError::InvalidPart(0).into());
        }
        let size: u64 = picked.iter().map(|p| p.size).sum();
        if size > max_size {
            return Err(CompleteError::TooLarge(size));
        }
        let (staged, mut file) = self.stage().map_err(ObjectError::from)?;
        let mut md5s = Vec::with_capacity(picked.len() * 16);
        for p in &picked {
            let mut input = std::fs::File::open(self.part_path(p)).map_err(ObjectError::from)?;
            std::io::copy(&mut input, &mut file).map_err(ObjectError::from)?;
            md5s.extend(hex::decode(&p.etag).unwrap_or_default());
        }
        file.sync_data().map_err(ObjectError::from)?;
        drop(file);
        let etag = format!("{}-{}", hex::encode(md5(&md5s)), picked.len());
        let blob = self.promote(&staged)?;
        let result = self.record(
            &upload.bucket,
            &upload.key,
            &blob,
            None,
            size,
            &etag,
            &upload.attrs,
            ObjectChange::CompleteMultipartUpload,
            writer,
            Some(&upload.id),
        );
        if result.is_err() {
            self.remove_blob(&blob);
        }
        Ok(result?)
    }

    pub fn abort_upload(&self, upload: &str) -> Result<(), ObjectError> {
        for b in self.rows.abort_upload(upload)? {
            self.remove_blob(&b);
        }
        Ok(())
    }

    /// The bucket's uploads in progress.
    pub fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, ObjectError> {
        self.rows.list_uploads(bucket, prefix)
    }

    // ---- the outbox ----

    /// Events not yet handed over, oldest first (an unreadable one is dropped).
    pub fn pending_events(&self, limit: usize) -> Result<Vec<(i64, ObjectEvent)>, StoreError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for (id, text) in self.rows.pending_events(limit)? {
            match serde_json::from_str(&text) {
                Ok(ev) => out.push((id, ev)),
                Err(e) => {
                    tracing::error!(id, error = %e, "unreadable object event dropped");
                    unreadable.push(id);
                }
            }
        }
        if !unreadable.is_empty() {
            self.rows.events_done(&unreadable)?;
        }
        Ok(out)
    }

    /// Forgets events that were handed over.
    pub fn events_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.rows.events_done(ids)
    }
}

/// The object rows in `objects.db`.
struct SqliteRows(Mutex<Connection>);

impl SqliteRows {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(conn: &Connection, bucket: &str) -> Result<ObjectError, rusqlite::Error> {
        let exists = conn.query_row("SELECT 1 FROM buckets WHERE name = ?1", [bucket], |_| Ok(())).optional()?;
        Ok(if exists.is_some() { ObjectError::NoSuchKey } else { ObjectError::NoSuchBucket })
    }

    /// A bucket's owner and notification rules (as stored), read inside a change's transaction.
    fn owner_and_rules(tx: &rusqlite::Transaction<'_>, bucket: &str) -> Result<(String, String), ObjectError> {
        tx.query_row("SELECT account, notifications FROM buckets WHERE name = ?1", [bucket], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
        .ok_or(ObjectError::NoSuchBucket)
    }

    /// Writes the outbox rows for one change; returns how many.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        tx: &rusqlite::Transaction<'_>,
        account: &str,
        rules: &str,
        bucket: &str,
        key: &str,
        size: u64,
        etag: &str,
        change: ObjectChange,
        writer: &Writer,
        now: i64,
    ) -> Result<usize, ObjectError> {
        let events = events_for(account, rules, bucket, key, size, etag, change, writer, now, || {
            Ok(tx.query_row(
                "INSERT INTO counters (name, value) VALUES ('sequencer', 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                [],
                |r| r.get(0),
            )?)
        })?;
        for e in &events {
            tx.execute("INSERT INTO outbox (event) VALUES (?1)", [e])?;
        }
        Ok(events.len())
    }
}

impl ObjectRows for SqliteRows {
    fn create_bucket(&self, name: &str, account: &str, now: i64) -> Result<(), ObjectError> {
        let conn = self.conn();
        if let Some(owner) = conn
            .query_row("SELECT account FROM buckets WHERE name = ?1", [name], |r| r.get::<_, String>(0))
            .optional()?
        {
            return Err(if owner == account {
                ObjectError::BucketAlreadyOwnedByYou
            } else {
                ObjectError::BucketAlreadyExists
            });
        }
        conn.execute(
            "INSERT INTO buckets (name, account, created_ms) VALUES (?1, ?2, ?3)",
            params![name, account, now],
        )?;
        Ok(())
    }

    fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, ObjectError> {
        Ok(self
            .conn()
            .query_row("SELECT name, account, created_ms FROM buckets WHERE name = ?1", [name], |r| {
                Ok(BucketInfo { name: r.get(0)?, account: r.get(1)?, created_ms: r.get(2)? })
            })
            .optional()?)
    }

    fn list_buckets(&self, account: &str) -> Result<Vec<BucketInfo>, ObjectError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, account, created_ms FROM buckets WHERE account = ?1 ORDER BY name")?;
        let rows = stmt
            .query_map([account], |r| Ok(BucketInfo { name: r.get(0)?, account: r.get(1)?, created_ms: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_bucket(&self, name: &str) -> Result<Vec<String>, ObjectError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.query_row("SELECT 1 FROM buckets WHERE name = ?1", [name], |_| Ok(())).optional()?.is_none() {
            return Err(ObjectError::NoSuchBucket);
        }
        if tx.query_row("SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1", [name], |_| Ok(())).optional()?.is_some() {
            return Err(ObjectError::BucketNotEmpty);
        }
        let blobs: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT p.blob FROM parts p JOIN uploads u ON p.upload = u.id WHERE u.bucket = ?1")?;
            stmt.query_map([name], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        tx.execute("DELETE FROM uploads WHERE bucket = ?1", [name])?;
        tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(blobs)
    }

    fn notifications(&self, bucket: &str) -> Result<Option<String>, ObjectError> {
        Ok(self
            .conn()
            .query_row("SELECT notifications FROM buckets WHERE name = ?1", [bucket], |r| r.get(0))
            .optional()?)
    }

    fn set_notifications(&self, bucket: &str, rules: &str) -> Result<bool, ObjectError> {
        Ok(self.conn().execute("UPDATE buckets SET notifications = ?2 WHERE name = ?1", params![bucket, rules])? > 0)
    }

    fn get(&self, bucket: &str, key: &str, data: bool) -> Result<(ObjectInfo, Option<Vec<u8>>), ObjectError> {
        let conn = self.conn();
        let sql = if data {
            "SELECT blob, size, etag, modified_ms, attrs, data FROM objects WHERE bucket = ?1 AND key = ?2"
        } else {
            "SELECT blob, size, etag, modified_ms, attrs, NULL FROM objects WHERE bucket = ?1 AND key = ?2"
        };
        let found = conn
            .query_row(sql, params![bucket, key.as_bytes()], |r| {
                let info = ObjectInfo::from_row(
                    key.to_string(),
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    &r.get::<_, String>(4)?,
                );
                Ok((info, r.get::<_, Option<Vec<u8>>>(5)?))
            })
            .optional()?;
        match found {
            Some(o) => Ok(o),
            None => Err(Self::missing(&conn, bucket)?),
        }
    }

    fn record(&self, w: &Recording<'_>) -> Result<Recorded, ObjectError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (account, rules) = Self::owner_and_rules(&tx, w.bucket)?;
        let old: Option<String> = tx
            .query_row(
                "SELECT blob FROM objects WHERE bucket = ?1 AND key = ?2",
                params![w.bucket, w.key.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        if w.writer.if_absent && old.is_some() {
            return Err(ObjectError::PreconditionFailed);
        }
        let now = now_ms();
        tx.execute(
            "INSERT OR REPLACE INTO objects (bucket, key, blob, size, etag, modified_ms, attrs, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![w.bucket, w.key.as_bytes(), w.blob, w.size as i64, w.etag, now, json(w.attrs), w.data],
        )?;
        let mut dropped_parts = Vec::new();
        if let Some(upload) = w.finishing_upload {
            let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload = ?1")?;
            dropped_parts = stmt.query_map([upload], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            // Aborted while its parts were being joined: the abort wins.
            if tx.execute("DELETE FROM uploads WHERE id = ?1", [upload])? == 0 {
                return Err(ObjectError::NoSuchUpload);
            }
        }
        let events = Self::emit(&tx, &account, &rules, w.bucket, w.key, w.size, w.etag, w.change, w.writer, now)?;
        tx.commit()?;
        Ok(Recorded { old, dropped_parts, events, now })
    }

    fn delete(&self, bucket: &str, key: &str, writer: &Writer) -> Result<Option<String>, ObjectError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (account, rules) = Self::owner_and_rules(&tx, bucket)?;
        let old: Option<String> = tx
            .query_row(
                "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob",
                params![bucket, key.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        if old.is_some() {
            Self::emit(&tx, &account, &rules, bucket, key, 0, "", ObjectChange::Delete, writer, now_ms())?;
        }
        tx.commit()?;
        Ok(old)
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        Ok(self.conn().query_row("SELECT 1 FROM buckets WHERE name = ?1", [bucket], |_| Ok(())).optional()?.is_some())
    }

    fn page(&self, bucket: &str, prefix: &[u8], cursor: &[u8]) -> Result<Vec<ObjectInfoRow>, ObjectError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key, blob, size, etag, modified_ms, attrs FROM objects
             WHERE bucket = ?1 AND key >= ?2 AND key > ?3 ORDER BY key LIMIT 256",
        )?;
        let rows = stmt
            .query_map(params![bucket, prefix, cursor], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn create_upload(&self, u: &UploadInfo) -> Result<(), ObjectError> {
        let conn = self.conn();
        if conn.query_row("SELECT 1 FROM buckets WHERE name = ?1", [&u.bucket], |_| Ok(())).optional()?.is_none() {
            return Err(ObjectError::NoSuchBucket);
        }
        conn.execute(
            "INSERT INTO uploads (id, bucket, key, created_ms, attrs) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![u.id, u.bucket, u.key.as_bytes(), u.created_ms, json(&u.attrs)],
        )?;
        Ok(())
    }

    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<UploadInfo>, ObjectError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT created_ms, attrs FROM uploads WHERE id = ?1 AND bucket = ?2 AND key = ?3",
                params![id, bucket, key.as_bytes()],
                |r| {
                    Ok(UploadInfo {
                        id: id.into(),
                        bucket: bucket.into(),
                        key: key.into(),
                        created_ms: r.get(0)?,
                        attrs: parse_attrs(&r.get::<_, String>(1)?),
                    })
                },
            )
            .optional()?)
    }

    fn put_part(&self, upload: &str, part: &PartInfo) -> Result<Option<String>, ObjectError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx.query_row("SELECT 1 FROM uploads WHERE id = ?1", [upload], |_| Ok(())).optional()?.is_none() {
            return Err(ObjectError::NoSuchUpload);
        }
        let old: Option<String> = tx
            .query_row("SELECT blob FROM parts WHERE upload = ?1 AND number = ?2", params![upload, part.number], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute(
            "INSERT OR REPLACE INTO parts (upload, number, blob, size, etag, modified_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![upload, part.number, part.blob, part.size as i64, part.etag, part.modified_ms],
        )?;
        tx.commit()?;
        Ok(old)
    }

    fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, ObjectError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT number, size, etag, modified_ms, blob FROM parts WHERE upload = ?1 ORDER BY number")?;
        let rows = stmt
            .query_map([upload], |r| Ok(PartInfo::from_row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn abort_upload(&self, upload: &str) -> Result<Vec<String>, ObjectError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let blobs = {
            let mut stmt = tx.prepare("SELECT blob FROM parts WHERE upload = ?1")?;
            stmt.query_map([upload], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?
        };
        if tx.execute("DELETE FROM uploads WHERE id = ?1", [upload])? == 0 {
            return Err(ObjectError::NoSuchUpload);
        }
        tx.commit()?;
        Ok(blobs)
    }

    fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, ObjectError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, key, created_ms, attrs FROM uploads WHERE bucket = ?1 AND key >= ?2 ORDER BY key, created_ms",
        )?;
        let rows = stmt.query_map(params![bucket, prefix.as_bytes()], |r| {
            Ok(UploadInfo {
                id: r.get(0)?,
                bucket: bucket.into(),
                key: key_string(r.get(1)?),
                created_ms: r.get(2)?,
                attrs: parse_attrs(&r.get::<_, String>(3)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().filter(|u| u.key.starts_with(prefix)).collect())
    }

    fn pending_events(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT id, event FROM outbox ORDER BY id LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn events_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn referenced_blobs(&self) -> Result<Option<HashSet<String>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT blob FROM objects UNION ALL SELECT blob FROM parts")?;
        Ok(Some(stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?))
    }
}

/// Why completing a multipart upload failed.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("the object would be {0} bytes, more than allowed")]
    TooLarge(u64),
}

impl From<StoreError> for CompleteError {
    fn from(e: StoreError) -> Self {
        Self::Object(e.into())
    }
}

fn md5(data: &[u8]) -> [u8; 16] {
    use md5::Digest;
    let mut out = [0u8; 16];
    out.copy_from_slice(&md5::Md5::digest(data));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stage(s: &ObjectStore, bytes: &[u8]) -> Staged {
        let (staged, mut f) = s.stage().unwrap();
        f.write_all(bytes).unwrap();
        staged
    }

    fn put(s: &ObjectStore, key: &str) {
        let st = stage(s, key.as_bytes());
        s.put("b", key, st, key.len() as u64, "e", &ObjectAttrs::default(), ObjectChange::Put, &Writer::default())
            .unwrap();
    }

    /// Runs `test` on an object store in SQLite, then on one in PostgreSQL (a cluster's).
    fn both(test: fn(&ObjectStore, &Path)) {
        let dir = tempfile::tempdir().unwrap();
        test(&ObjectStore::open(dir.path()).unwrap(), dir.path());
        crate::conformance::with_pool(move |pool| {
            let dir = tempfile::tempdir().unwrap();
            test(&ObjectStore::open_cluster(dir.path(), &pool, "node-1").unwrap(), dir.path());
        });
    }

    #[test]
    fn listing_groups_by_delimiter_and_pages() {
        both(listing);
    }

    fn listing(s: &ObjectStore, _: &Path) {
        s.create_bucket("b", "1").unwrap();
        for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
            put(s, k);
        }
        let all = s.list("b", "", Some("/"), None, 1000).unwrap();
        assert_eq!(all.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["b", "d"]);
        assert_eq!(all.prefixes, ["a/", "c/"]);
        assert!(all.next.is_none());
        let under_c = s.list("b", "c/", Some("/"), None, 1000).unwrap();
        assert_eq!(under_c.prefixes, ["c/x/"]);
        assert_eq!(under_c.objects[0].key, "c/y");
        // Pages of two, following the tokens, give everything once.
        // A version 1 marker naming a common prefix continues after everything under it.
        let v1 = s.list("b", "", Some("/"), Some(b"a/"), 1).unwrap();
        assert_eq!(v1.objects[0].key, "b");
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = s.list("b", "", Some("/"), after.as_deref(), 2).unwrap();
            seen.extend(page.objects.iter().map(|o| o.key.clone()));
            seen.extend(page.prefixes.iter().cloned());
            match page.next {
                Some(t) => after = Some(hex::decode(t).unwrap()),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["a/", "b", "c/", "d"]);
    }

    #[test]
    fn writes_replace_whole_objects_and_leave_no_files_behind() {
        both(replacing);
    }

    fn replacing(s: &ObjectStore, dir: &Path) {
        s.create_bucket("b", "1").unwrap();
        put(s, "k");
        let first = s.head("b", "k").unwrap();
        let st = stage(s, b"second");
        s.put("b", "k", st, 6, "e2", &ObjectAttrs::default(), ObjectChange::Put, &Writer::default()).unwrap();
        assert!(!s.object_path(&first).unwrap().exists(), "the replaced bytes are removed");
        assert_eq!(std::fs::read(s.object_path(&s.head("b", "k").unwrap()).unwrap()).unwrap(), b"second");
        // A small object lives in its row, and replacing it with a file (or back) leaves
        // nothing behind.
        s.put_inline("b", "k", b"tiny", "e3", &ObjectAttrs::default(), ObjectChange::Put, &Writer::default()).unwrap();
        let (info, data) = s.get("b", "k").unwrap();
        assert_eq!((s.object_path(&info), data.as_deref()), (None, Some(&b"tiny"[..])));
        // An upload into a missing bucket leaves nothing.
        let st = stage(s, b"x");
        assert!(matches!(
            s.put("nope", "k", st, 1, "e", &ObjectAttrs::default(), ObjectChange::Put, &Writer::default()),
            Err(ObjectError::NoSuchBucket)
        ));
        assert_eq!(std::fs::read_dir(dir.join("staging")).unwrap().count(), 0);
        let blobs: usize = std::fs::read_dir(dir.join("blobs"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        assert_eq!(blobs, 0, "the inline object has no file, and the file it replaced is gone");
        assert!(matches!(s.delete_bucket("b"), Err(ObjectError::BucketNotEmpty)));
        assert!(s.delete("b", "k", &Writer::default()).unwrap());
        s.delete_bucket("b").unwrap();
    }

    #[test]
    fn matching_rules_put_events_in_the_outbox() {
        both(outbox);
    }

    fn outbox(s: &ObjectStore, _: &Path) {
        s.create_bucket("b", "1").unwrap();
        let rule = NotificationRule {
            id: "r".into(),
            function_arn: "arn:aws:lambda:us-east-1:1:function:f".into(),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: Some("in/".into()),
            suffix: None,
        };
        s.set_notifications("b", &[rule]).unwrap();
        put(s, "in/a");
        put(s, "out/a");
        put(s, "in/b");
        let events = s.pending_events(10).unwrap();
        assert_eq!(events.iter().map(|(_, e)| e.key.as_str()).collect::<Vec<_>>(), ["in/a", "in/b"]);
        assert!(events[0].1.sequencer < events[1].1.sequencer);
        s.events_done(&[events[0].0]).unwrap();
        assert_eq!(s.pending_events(10).unwrap().len(), 1);
    }
}
