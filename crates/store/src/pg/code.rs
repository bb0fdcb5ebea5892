//! Code packages and layer archives in the cluster's database: stored once per account by
//! SHA-256, in 1 MiB chunks, written in one transaction (a package is whole or absent). Each
//! node keeps an unpacked copy ([`crate::CodeStore`]) and fetches a package it lacks on first
//! use, checking its digest before unpacking.

use super::{PgPool, col};
use crate::StoreError;

/// Bytes per stored chunk.
const CHUNK: usize = 1 << 20;

/// The cluster's code packages. Cheap to clone.
#[derive(Clone)]
pub struct CodeBlobs {
    pool: PgPool,
}

impl CodeBlobs {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a package unless it is there already.
    pub async fn put(&self, account: &str, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let exists =
            c.query("SELECT 1 FROM code_packages WHERE account = $1 AND sha256 = $2", &[&account, &sha256]).await?;
        if !exists.is_empty() {
            return Ok(());
        }
        let tx = c.client().transaction().await?;
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        let inserted = tx
            .execute(
                "INSERT INTO code_packages (account, sha256, size, chunks) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&account, &sha256, &(bytes.len() as i64), &(chunks.len() as i32)],
            )
            .await?;
        if inserted == 0 {
            return Ok(()); // another node stored it meanwhile
        }
        for (idx, chunk) in chunks.iter().enumerate() {
            tx.execute(
                "INSERT INTO code_chunks (account, sha256, idx, bytes) VALUES ($1, $2, $3, $4)",
                &[&account, &sha256, &(idx as i32), chunk],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A stored package's bytes, `None` if the cluster does not have it.
    pub async fn get(&self, account: &str, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.pool.get().await?;
        let package = c
            .query("SELECT size, chunks FROM code_packages WHERE account = $1 AND sha256 = $2", &[&account, &sha256])
            .await?;
        let Some(p) = package.first() else { return Ok(None) };
        let (size, chunks): (i64, i32) = (col(p, 0)?, col(p, 1)?);
        let mut out = Vec::with_capacity(size.max(0) as usize);
        for idx in 0..chunks {
            let rows = c
                .query(
                    "SELECT bytes FROM code_chunks WHERE account = $1 AND sha256 = $2 AND idx = $3",
                    &[&account, &sha256, &idx],
                )
                .await?;
            let row = rows.first().ok_or_else(|| StoreError::Corrupt(format!("package {sha256} lacks chunk {idx}")))?;
            out.extend_from_slice(col::<&[u8]>(row, 0)?);
        }
        Ok(Some(out))
    }
}
