//! Object storage in the cluster's database (see [`crate::objects`]): the same rows as
//! `objects.db`, and the bytes of larger objects and parts as chunks, so an object written
//! through one node is read through any other (which caches the bytes under its own
//! `objects/blobs/`). The outbox is claimed by one node at a time, so each event is handed
//! over once (again only if that node dies before it is done).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use tokio_postgres::Transaction;

use super::{PgPool, block, col};
use crate::StoreError;
use crate::objects::{
    BucketInfo, ObjectError, ObjectInfo, ObjectInfoRow, ObjectRows, PartInfo, Recorded, Recording, UploadInfo,
    events_for, key_string, parse_attrs,
};

/// Bytes per stored chunk of an object.
const CHUNK: usize = 1 << 20;
/// How long a node keeps the events it claimed from the others.
const CLAIM_SECS: i64 = 60;

/// The cluster's objects. Cheap to clone.
#[derive(Clone)]
pub struct PgObjects {
    pool: PgPool,
    /// This node's incarnation, in whose name outbox rows are claimed.
    incarnation: String,
}

fn now_ms() -> i64 {
    model::logfmt::now_ms()
}

impl PgObjects {
    pub(crate) fn new(pool: PgPool, incarnation: String) -> Self {
        Self { pool, incarnation }
    }

    /// Stores a blob's bytes (from the file at `path`) for every node.
    pub(crate) fn put_blob(&self, id: &str, path: &Path) -> Result<(), StoreError> {
        let mut file = std::fs::File::open(path)?;
        block(async {
            let mut c = self.pool.get().await?;
            let tx = c.client().transaction().await?;
            let mut buf = vec![0u8; CHUNK];
            let mut idx: i32 = 0;
            loop {
                let mut filled = 0;
                while filled < CHUNK {
                    let n = file.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 && idx > 0 {
                    break;
                }
                tx.execute(
                    "INSERT INTO object_blobs (id, idx, bytes) VALUES ($1, $2, $3)",
                    &[&id, &idx, &&buf[..filled]],
                )
                .await?;
                idx += 1;
                if filled < CHUNK {
                    break;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Writes a blob's bytes to `path`; false if the cluster does not have it.
    pub(crate) fn fetch_blob(&self, id: &str, path: &Path) -> Result<bool, StoreError> {
        block(async {
            let mut c = self.pool.get().await?;
            let count = c.query("SELECT count(*) FROM object_blobs WHERE id = $1", &[&id]).await?;
            let chunks: i64 = count.first().map(|r| col(r, 0)).transpose()?.unwrap_or(0);
            if chunks == 0 {
                return Ok(false);
            }
            let mut out = std::fs::File::create(path)?;
            for idx in 0..chunks as i32 {
                let rows = c.query("SELECT bytes FROM object_blobs WHERE id = $1 AND idx = $2", &[&id, &idx]).await?;
                let row = rows.first().ok_or_else(|| StoreError::Corrupt(format!("blob {id} lacks chunk {idx}")))?;
                out.write_all(col::<&[u8]>(row, 0)?)?;
            }
            out.sync_data()?;
            Ok(true)
        })
    }

    pub(crate) fn delete_blob(&self, id: &str) -> Result<(), StoreError> {
        block(async {
            let mut c = self.pool.get().await?;
            c.execute("DELETE FROM object_blobs WHERE id = $1", &[&id]).await?;
            Ok(())
        })
    }

    /// Removes blob chunks nothing refers to that are older than an hour (what a node that
    /// died between storing the bytes and committing the object left behind).
    pub(crate) fn sweep_orphans(&self) -> Result<(), StoreError> {
        let removed = block(async {
            let mut c = self.pool.get().await?;
            c.execute(
                "DELETE FROM object_blobs b WHERE b.created_at < now() - interval '1 hour'
                   AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.blob = b.id)
                   AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.blob = b.id)",
                &[],
            )
            .await
        })?;
        if removed > 0 {
            tracing::info!(chunks = removed, "removed object bytes no object refers to");
        }
        Ok(())
    }

    /// Runs `f` in one transaction on a pooled connection, from a blocking thread.
    fn run<T>(
        &self,
        f: impl for<'a> FnOnce(&'a Transaction<'a>) -> BoxFuture<'a, Result<T, ObjectError>>,
    ) -> Result<T, ObjectError> {
        block(async {
            let mut c = self.pool.get().await?;
            let tx = c.client().transaction().await.map_err(StoreError::from)?;
            let out = f(&tx).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(out)
        })
    }
}

/// A boxed future, as the transaction closures return.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

fn pg(e: tokio_postgres::Error) -> ObjectError {
    ObjectError::Store(StoreError::from(e))
}

async fn owner_and_rules(tx: &Transaction<'_>, bucket: &str) -> Result<(String, String), ObjectError> {
    let rows = tx
        .query("SELECT account, notifications FROM buckets WHERE name = $1 FOR SHARE", &[&bucket])
        .await
        .map_err(pg)?;
    let r = rows.first().ok_or(ObjectError::NoSuchBucket)?;
    Ok((col(r, 0)?, col(r, 1)?))
}

async fn missing(tx: &Transaction<'_>, bucket: &str) -> Result<ObjectError, ObjectError> {
    let rows = tx.query("SELECT 1 FROM buckets WHERE name = $1", &[&bucket]).await.map_err(pg)?;
    Ok(if rows.is_empty() { ObjectError::NoSuchBucket } else { ObjectError::NoSuchKey })
}

#[allow(clippy::too_many_arguments)]
async fn emit(
    tx: &Transaction<'_>,
    account: &str,
    rules: &str,
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    change: model::objects::ObjectChange,
    writer: &crate::objects::Writer,
    now: i64,
) -> Result<usize, ObjectError> {
    // The sequencer is read only when a rule matches; `events_for` asks for it synchronously,
    // so it is taken first when any rule could match.
    let seq = if rules.trim() != "[]" {
        let rows = tx.query("SELECT nextval('object_sequencer')", &[]).await.map_err(pg)?;
        rows.first().map(|r| col::<i64>(r, 0)).transpose()?.unwrap_or(0)
    } else {
        0
    };
    let events = events_for(account, rules, bucket, key, size, etag, change, writer, now, || Ok(seq))?;
    for e in &events {
        tx.execute("INSERT INTO object_outbox (event) VALUES ($1)", &[e]).await.map_err(pg)?;
    }
    Ok(events.len())
}

impl ObjectRows for PgObjects {
    fn create_bucket(&self, name: &str, account: &str, now: i64) -> Result<(), ObjectError> {
        let (name, account) = (name.to_string(), account.to_string());
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx.query("SELECT account FROM buckets WHERE name = $1", &[&name]).await.map_err(pg)?;
                if let Some(r) = rows.first() {
                    let owner: String = col(r, 0)?;
                    return Err(if owner == account {
                        ObjectError::BucketAlreadyOwnedByYou
                    } else {
                        ObjectError::BucketAlreadyExists
                    });
                }
                let n = tx
                    .execute(
                        "INSERT INTO buckets (name, account, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[&name, &account, &now],
                    )
                    .await
                    .map_err(pg)?;
                if n == 0 { Err(ObjectError::BucketAlreadyExists) } else { Ok(()) }
            })
        })
    }

    fn bucket(&self, name: &str) -> Result<Option<BucketInfo>, ObjectError> {
        let name = name.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query("SELECT name, account, created_ms FROM buckets WHERE name = $1", &[&name])
                    .await
                    .map_err(pg)?;
                rows.first()
                    .map(|r| Ok(BucketInfo { name: col(r, 0)?, account: col(r, 1)?, created_ms: col(r, 2)? }))
                    .transpose()
            })
        })
    }

    fn list_buckets(&self, account: &str) -> Result<Vec<BucketInfo>, ObjectError> {
        let account = account.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT name, account, created_ms FROM buckets WHERE account = $1 ORDER BY name",
                        &[&account],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter()
                    .map(|r| Ok(BucketInfo { name: col(r, 0)?, account: col(r, 1)?, created_ms: col(r, 2)? }))
                    .collect()
            })
        })
    }

    fn delete_bucket(&self, name: &str) -> Result<Vec<String>, ObjectError> {
        let name = name.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                if tx.query("SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE", &[&name]).await.map_err(pg)?.is_empty()
                {
                    return Err(ObjectError::NoSuchBucket);
                }
                if !tx.query("SELECT 1 FROM objects WHERE bucket = $1 LIMIT 1", &[&name]).await.map_err(pg)?.is_empty()
                {
                    return Err(ObjectError::BucketNotEmpty);
                }
                let rows = tx
                    .query("SELECT p.blob FROM parts p JOIN uploads u ON p.upload = u.id WHERE u.bucket = $1", &[&name])
                    .await
                    .map_err(pg)?;
                let blobs = rows.iter().map(|r| col(r, 0)).collect::<Result<Vec<String>, _>>()?;
                tx.execute("DELETE FROM uploads WHERE bucket = $1", &[&name]).await.map_err(pg)?;
                tx.execute("DELETE FROM buckets WHERE name = $1", &[&name]).await.map_err(pg)?;
                Ok(blobs)
            })
        })
    }

    fn notifications(&self, bucket: &str) -> Result<Option<String>, ObjectError> {
        let bucket = bucket.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                let rows =
                    tx.query("SELECT notifications FROM buckets WHERE name = $1", &[&bucket]).await.map_err(pg)?;
                Ok(rows.first().map(|r| col(r, 0)).transpose()?)
            })
        })
    }

    fn set_notifications(&self, bucket: &str, rules: &str) -> Result<bool, ObjectError> {
        let (bucket, rules) = (bucket.to_string(), rules.to_string());
        self.run(move |tx| {
            Box::pin(async move {
                Ok(tx
                    .execute("UPDATE buckets SET notifications = $2 WHERE name = $1", &[&bucket, &rules])
                    .await
                    .map_err(pg)?
                    > 0)
            })
        })
    }

    fn get(&self, bucket: &str, key: &str, data: bool) -> Result<(ObjectInfo, Option<Vec<u8>>), ObjectError> {
        let (bucket, key) = (bucket.to_string(), key.to_string());
        self.run(move |tx| {
            Box::pin(async move {
                let sql = if data {
                    "SELECT blob, size, etag, modified_ms, attrs, data FROM objects WHERE bucket = $1 AND key = $2"
                } else {
                    "SELECT blob, size, etag, modified_ms, attrs, NULL::bytea FROM objects WHERE bucket = $1 AND key = $2"
                };
                let rows = tx.query(sql, &[&bucket, &key.as_bytes()]).await.map_err(pg)?;
                match rows.first() {
                    Some(r) => Ok((
                        ObjectInfo::from_row(key.clone(), col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?, &col::<String>(r, 4)?),
                        col(r, 5)?,
                    )),
                    None => Err(missing(tx, &bucket).await?),
                }
            })
        })
    }

    fn record(&self, w: &Recording<'_>) -> Result<Recorded, ObjectError> {
        block(async {
            let mut c = self.pool.get().await?;
            let tx = c.client().transaction().await.map_err(pg)?;
            let (account, rules) = owner_and_rules(&tx, w.bucket).await?;
            let old = tx
                .query(
                    "SELECT blob FROM objects WHERE bucket = $1 AND key = $2 FOR UPDATE",
                    &[&w.bucket, &w.key.as_bytes()],
                )
                .await
                .map_err(pg)?;
            let old: Option<String> = old.first().map(|r| col(r, 0)).transpose()?;
            if w.writer.if_absent && old.is_some() {
                return Err(ObjectError::PreconditionFailed);
            }
            let now = now_ms();
            let attrs = serde_json::to_string(w.attrs).unwrap_or_default();
            tx.execute(
                "INSERT INTO objects (bucket, key, blob, size, etag, modified_ms, attrs, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (bucket, key) DO UPDATE SET blob = excluded.blob, size = excluded.size, etag = excluded.etag,
                     modified_ms = excluded.modified_ms, attrs = excluded.attrs, data = excluded.data",
                &[&w.bucket, &w.key.as_bytes(), &w.blob, &(w.size as i64), &w.etag, &now, &attrs, &w.data],
            )
            .await
            .map_err(pg)?;
            let mut dropped_parts = Vec::new();
            if let Some(upload) = w.finishing_upload {
                let rows = tx.query("SELECT blob FROM parts WHERE upload = $1", &[&upload]).await.map_err(pg)?;
                dropped_parts = rows.iter().map(|r| col(r, 0)).collect::<Result<Vec<String>, _>>()?;
                // Aborted while its parts were being joined: the abort wins.
                if tx.execute("DELETE FROM uploads WHERE id = $1", &[&upload]).await.map_err(pg)? == 0 {
                    return Err(ObjectError::NoSuchUpload);
                }
            }
            let events = emit(&tx, &account, &rules, w.bucket, w.key, w.size, w.etag, w.change, w.writer, now).await?;
            tx.commit().await.map_err(pg)?;
            Ok(Recorded { old, dropped_parts, events, now })
        })
    }

    fn delete(&self, bucket: &str, key: &str, writer: &crate::objects::Writer) -> Result<Option<String>, ObjectError> {
        block(async {
            let mut c = self.pool.get().await?;
            let tx = c.client().transaction().await.map_err(pg)?;
            let (account, rules) = owner_and_rules(&tx, bucket).await?;
            let rows = tx
                .query("DELETE FROM objects WHERE bucket = $1 AND key = $2 RETURNING blob", &[&bucket, &key.as_bytes()])
                .await
                .map_err(pg)?;
            let old: Option<String> = rows.first().map(|r| col(r, 0)).transpose()?;
            if old.is_some() {
                let change = model::objects::ObjectChange::Delete;
                emit(&tx, &account, &rules, bucket, key, 0, "", change, writer, now_ms()).await?;
            }
            tx.commit().await.map_err(pg)?;
            Ok(old)
        })
    }

    fn bucket_exists(&self, bucket: &str) -> Result<bool, ObjectError> {
        Ok(self.bucket(bucket)?.is_some())
    }

    fn page(&self, bucket: &str, prefix: &[u8], cursor: &[u8]) -> Result<Vec<ObjectInfoRow>, ObjectError> {
        let (bucket, prefix, cursor) = (bucket.to_string(), prefix.to_vec(), cursor.to_vec());
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT key, blob, size, etag, modified_ms, attrs FROM objects
                         WHERE bucket = $1 AND key >= $2 AND key > $3 ORDER BY key LIMIT 256",
                        &[&bucket, &prefix, &cursor],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter()
                    .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?, col(r, 4)?, col(r, 5)?)))
                    .collect()
            })
        })
    }

    fn create_upload(&self, u: &UploadInfo) -> Result<(), ObjectError> {
        let u = u.clone();
        self.run(move |tx| {
            Box::pin(async move {
                if tx.query("SELECT 1 FROM buckets WHERE name = $1", &[&u.bucket]).await.map_err(pg)?.is_empty() {
                    return Err(ObjectError::NoSuchBucket);
                }
                let attrs = serde_json::to_string(&u.attrs).unwrap_or_default();
                tx.execute(
                    "INSERT INTO uploads (id, bucket, key, created_ms, attrs) VALUES ($1, $2, $3, $4, $5)",
                    &[&u.id, &u.bucket, &u.key.as_bytes(), &u.created_ms, &attrs],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<Option<UploadInfo>, ObjectError> {
        let (bucket, key, id) = (bucket.to_string(), key.to_string(), id.to_string());
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT created_ms, attrs FROM uploads WHERE id = $1 AND bucket = $2 AND key = $3",
                        &[&id, &bucket, &key.as_bytes()],
                    )
                    .await
                    .map_err(pg)?;
                rows.first()
                    .map(|r| {
                        Ok(UploadInfo {
                            id: id.clone(),
                            bucket: bucket.clone(),
                            key: key.clone(),
                            created_ms: col(r, 0)?,
                            attrs: parse_attrs(&col::<String>(r, 1)?),
                        })
                    })
                    .transpose()
            })
        })
    }

    fn put_part(&self, upload: &str, part: &PartInfo) -> Result<Option<String>, ObjectError> {
        let (upload, part) = (upload.to_string(), part.clone());
        self.run(move |tx| {
            Box::pin(async move {
                if tx.query("SELECT 1 FROM uploads WHERE id = $1 FOR SHARE", &[&upload]).await.map_err(pg)?.is_empty() {
                    return Err(ObjectError::NoSuchUpload);
                }
                let number = i64::from(part.number);
                let rows = tx
                    .query("SELECT blob FROM parts WHERE upload = $1 AND number = $2 FOR UPDATE", &[&upload, &number])
                    .await
                    .map_err(pg)?;
                let old: Option<String> = rows.first().map(|r| col(r, 0)).transpose()?;
                tx.execute(
                    "INSERT INTO parts (upload, number, blob, size, etag, modified_ms) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (upload, number) DO UPDATE SET blob = excluded.blob, size = excluded.size,
                         etag = excluded.etag, modified_ms = excluded.modified_ms",
                    &[&upload, &number, &part.blob(), &(part.size as i64), &part.etag, &part.modified_ms],
                )
                .await
                .map_err(pg)?;
                Ok(old)
            })
        })
    }

    fn parts(&self, upload: &str) -> Result<Vec<PartInfo>, ObjectError> {
        let upload = upload.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT number, size, etag, modified_ms, blob FROM parts WHERE upload = $1 ORDER BY number",
                        &[&upload],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter()
                    .map(|r| {
                        Ok(PartInfo::from_row(col::<i64>(r, 0)? as u32, col(r, 1)?, col(r, 2)?, col(r, 3)?, col(r, 4)?))
                    })
                    .collect()
            })
        })
    }

    fn abort_upload(&self, upload: &str) -> Result<Vec<String>, ObjectError> {
        let upload = upload.to_string();
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx.query("SELECT blob FROM parts WHERE upload = $1", &[&upload]).await.map_err(pg)?;
                let blobs = rows.iter().map(|r| col(r, 0)).collect::<Result<Vec<String>, _>>()?;
                if tx.execute("DELETE FROM uploads WHERE id = $1", &[&upload]).await.map_err(pg)? == 0 {
                    return Err(ObjectError::NoSuchUpload);
                }
                Ok(blobs)
            })
        })
    }

    fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, ObjectError> {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        self.run(move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT id, key, created_ms, attrs FROM uploads WHERE bucket = $1 AND key >= $2 ORDER BY key, created_ms",
                        &[&bucket, &prefix.as_bytes()],
                    )
                    .await
                    .map_err(pg)?;
                let all = rows
                    .iter()
                    .map(|r| {
                        Ok(UploadInfo {
                            id: col(r, 0)?,
                            bucket: bucket.clone(),
                            key: key_string(col(r, 1)?),
                            created_ms: col(r, 2)?,
                            attrs: parse_attrs(&col::<String>(r, 3)?),
                        })
                    })
                    .collect::<Result<Vec<_>, ObjectError>>()?;
                Ok(all.into_iter().filter(|u| u.key.starts_with(&prefix)).collect())
            })
        })
    }

    fn pending_events(&self, limit: usize) -> Result<Vec<(i64, String)>, StoreError> {
        block(async {
            let mut c = self.pool.get().await?;
            let rows = c
                .query(
                    "WITH free AS MATERIALIZED (
                         SELECT id FROM object_outbox
                         WHERE claimed_by IS NULL OR claimed_by = $2 OR claimed_until < now()
                         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                     UPDATE object_outbox o SET claimed_by = $2, claimed_until = now() + $3::bigint * interval '1 second'
                     FROM free WHERE o.id = free.id RETURNING o.id, o.event",
                    &[&(limit as i64), &self.incarnation, &CLAIM_SECS],
                )
                .await?;
            let mut out = rows
                .iter()
                .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
                .collect::<Result<Vec<(i64, String)>, StoreError>>()?;
            out.sort_by_key(|e| e.0);
            Ok(out)
        })
    }

    fn events_done(&self, ids: &[i64]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        block(async {
            let mut c = self.pool.get().await?;
            c.execute("DELETE FROM object_outbox WHERE id = ANY($1)", &[&ids]).await?;
            Ok(())
        })
    }

    fn referenced_blobs(&self) -> Result<Option<HashSet<String>>, StoreError> {
        // Every object of the cluster is too many to list per start; the cache under
        // `objects/blobs` keeps what it fetched (a replaced object's file goes when replaced).
        Ok(None)
    }
}
