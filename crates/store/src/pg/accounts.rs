//! Accounts and access keys in the cluster's database (see [`crate::accounts`]): the rows
//! only; secrets are sealed and unsealed above them.

use super::{PgPool, block, col};
use crate::StoreError;
use crate::accounts::{AccessKey, Account, AccountRows, Sealed};

/// The account rows of the cluster.
pub struct PgAccounts {
    pool: PgPool,
}

impl PgAccounts {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates `id` if it does not exist (the default account, at start-up).
    pub(crate) async fn ensure_account(&self, id: &str, name: &str, created_ms: i64) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        c.execute(
            "INSERT INTO accounts (id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &name, &created_ms],
        )
        .await?;
        Ok(())
    }

    fn query(&self, sql: &str, params: &[super::Param<'_>]) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        block(async {
            let mut c = self.pool.get().await?;
            c.query(sql, params).await
        })
    }

    fn execute(&self, sql: &str, params: &[super::Param<'_>]) -> Result<u64, StoreError> {
        block(async {
            let mut c = self.pool.get().await?;
            c.execute(sql, params).await
        })
    }
}

impl AccountRows for PgAccounts {
    fn insert_account(&self, id: &str, name: &str, created_ms: i64) -> Result<bool, StoreError> {
        Ok(self.execute(
            "INSERT INTO accounts (id, name, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&id, &name, &created_ms],
        )? > 0)
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.query("SELECT id, name, created_ms FROM accounts ORDER BY created_ms, id", &[])?
            .iter()
            .map(|r| Ok(Account { id: col(r, 0)?, name: col(r, 1)?, created_ms: col(r, 2)? }))
            .collect()
    }

    fn account_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(!self.query("SELECT 1 FROM accounts WHERE id = $1", &[&id])?.is_empty())
    }

    fn insert_key(
        &self,
        id: &str,
        account: &str,
        sealed: &[u8],
        nonce: &[u8],
        created_ms: i64,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO access_keys (access_key_id, account, sealed_secret, nonce, created_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &account, &sealed, &nonce, &created_ms],
        )?;
        Ok(())
    }

    fn list_keys(&self, account: Option<&str>) -> Result<Vec<AccessKey>, StoreError> {
        self.query(
            "SELECT access_key_id, account, created_ms, revoked_ms FROM access_keys
             WHERE $1::text IS NULL OR account = $1 ORDER BY created_ms, access_key_id",
            &[&account],
        )?
        .iter()
        .map(|r| {
            Ok(AccessKey {
                access_key_id: col(r, 0)?,
                account: col(r, 1)?,
                created_ms: col(r, 2)?,
                revoked_ms: col(r, 3)?,
            })
        })
        .collect()
    }

    fn revoke_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.execute(
            "UPDATE access_keys SET revoked_ms = $2 WHERE access_key_id = $1 AND revoked_ms IS NULL",
            &[&id, &now_ms],
        )? > 0)
    }

    fn function_key_id(&self, account: &str) -> Result<Option<String>, StoreError> {
        self.query("SELECT access_key_id FROM function_keys WHERE account = $1", &[&account])?
            .first()
            .map(|r| col(r, 0))
            .transpose()
    }

    fn set_function_key(&self, account: &str, key_id: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO function_keys (account, access_key_id) VALUES ($1, $2)
             ON CONFLICT (account) DO UPDATE SET access_key_id = excluded.access_key_id",
            &[&account, &key_id],
        )?;
        Ok(())
    }

    fn sealed(&self, id: &str) -> Result<Option<Sealed>, StoreError> {
        self.query(
            "SELECT account, sealed_secret, nonce FROM access_keys WHERE access_key_id = $1 AND revoked_ms IS NULL",
            &[&id],
        )?
        .first()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .transpose()
    }
}
