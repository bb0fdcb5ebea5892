//! Accounts (tenants) and their access keys, in `<data-dir>/accounts.db`.
//!
//! SigV4 needs the secret itself to check a signature (it is an HMAC key), so secrets cannot
//! be hashed: they are sealed (ChaCha20-Poly1305) with a key kept in `<data-dir>/secrets.key`
//! (mode 0600, created on first use). A copy of the database without that file reveals no
//! secret. A secret is shown once, when its key is created, and never logged.
//!
//! The server and the `stratus accounts` command both open this database; SQLite serialises
//! their writes, and the server re-reads a key at most a second after it last looked.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    account       TEXT NOT NULL REFERENCES accounts(id),
    sealed_secret BLOB NOT NULL,
    nonce         BLOB NOT NULL,
    created_ms    INTEGER NOT NULL,
    revoked_ms    INTEGER
);
-- the key an account's functions are given (AWS_ACCESS_KEY_ID in their environment)
CREATE TABLE IF NOT EXISTS function_keys (
    account       TEXT PRIMARY KEY REFERENCES accounts(id),
    access_key_id TEXT NOT NULL REFERENCES access_keys(access_key_id)
);
";

/// An account as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// An access key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub account: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A newly created key: the only time its secret is seen.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account: String,
}

/// A key's account, sealed secret and nonce.
pub(crate) type Sealed = (String, Vec<u8>, Vec<u8>);

/// The rows behind [`Accounts`]: SQLite's `accounts.db` or the cluster's database. Sealing
/// and unsealing happen above them, so neither ever sees a secret in the clear.
pub(crate) trait AccountRows: Send + Sync {
    fn insert_account(&self, id: &str, name: &str, created_ms: i64) -> Result<bool, StoreError>;
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;
    fn account_exists(&self, id: &str) -> Result<bool, StoreError>;
    fn insert_key(
        &self,
        id: &str,
        account: &str,
        sealed: &[u8],
        nonce: &[u8],
        created_ms: i64,
    ) -> Result<(), StoreError>;
    fn list_keys(&self, account: Option<&str>) -> Result<Vec<AccessKey>, StoreError>;
    fn revoke_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    fn function_key_id(&self, account: &str) -> Result<Option<String>, StoreError>;
    fn set_function_key(&self, account: &str, key_id: &str) -> Result<(), StoreError>;
    /// The account, sealed secret and nonce of an active key.
    fn sealed(&self, id: &str) -> Result<Option<Sealed>, StoreError>;
}

/// The accounts database. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    rows: Arc<dyn AccountRows>,
    cipher: Arc<ChaCha20Poly1305>,
    /// Signs download URLs (derived from the sealing key, never the key itself).
    url_key: Arc<[u8; 32]>,
}

fn now_ms() -> i64 {
    model::logfmt::now_ms()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut buf = [0u8; N];
    let mut f = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut buf)?;
    Ok(buf)
}

/// Letters and digits drawn from the kernel's random source.
fn random_string(len: usize, alphabet: &[u8]) -> Result<String, StoreError> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>()? {
            // Rejection sampling keeps every character equally likely.
            let limit = 256 - (256 % alphabet.len());
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn load_or_create_key(path: &Path) -> Result<[u8; 32], StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok(k);
        }
        Ok(_) => return Err(StoreError::Corrupt(format!("{} is not a 32-byte key", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let key = random_bytes::<32>()?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    // Another process may have created it meanwhile: keep whichever landed first.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            load_or_create_key(path)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether two signatures are equal, taking the same time wherever they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(message);
    m.finalize().into_bytes().into()
}

impl Accounts {
    /// A signature for a download URL's `message` (hex HMAC-SHA256).
    pub fn sign_url(&self, message: &str) -> String {
        hex::encode(mac(&*self.url_key, message.as_bytes()))
    }

    /// Whether `signature` is [`Accounts::sign_url`]'s for `message` (constant time).
    pub fn verify_url(&self, message: &str, signature: &str) -> bool {
        constant_time_eq(&self.sign_url(message), signature)
    }

    /// Opens the accounts database of the data directory `root`, creating it (and the sealing
    /// key) if missing, and makes sure `default_account` exists.
    pub fn open(root: &Path, default_account: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root)?;
        let key = load_or_create_key(&root.join("secrets.key"))?;
        let conn = Connection::open(root.join("accounts.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO accounts (id, name, created_ms) VALUES (?1, 'default', ?2)",
            params![default_account, now_ms()],
        )?;
        Ok(Self::with_rows(Arc::new(SqliteRows(Mutex::new(conn))), &key))
    }

    /// Accounts kept in the cluster's database, sealed with the cluster's sealing key (made by
    /// the first node and kept in the same database: protect it as the secrets it guards).
    pub async fn open_cluster(pool: &crate::pg::PgPool, default_account: &str) -> Result<Self, StoreError> {
        let rows = crate::pg::PgAccounts::new(pool.clone());
        let key = pool.secret("sealing-key", random_bytes::<32>()?.to_vec()).await?;
        let key: [u8; 32] =
            key.try_into().map_err(|_| StoreError::Corrupt("the cluster's sealing key is not 32 bytes".into()))?;
        rows.ensure_account(default_account, "default", now_ms()).await?;
        Ok(Self::with_rows(Arc::new(rows), &key))
    }

    fn with_rows(rows: Arc<dyn AccountRows>, key: &[u8; 32]) -> Self {
        Self {
            rows,
            cipher: Arc::new(ChaCha20Poly1305::new(Key::from_slice(key))),
            url_key: Arc::new(mac(key, b"stratus download URLs v1")),
        }
    }

    /// Creates an account; `id` is drawn at random when not given.
    pub fn create_account(&self, id: Option<&str>, name: &str) -> Result<Account, StoreError> {
        let id = match id {
            Some(id) => id.to_string(),
            None => random_string(12, b"0123456789")?,
        };
        if !model::names::is_account_id(&id) {
            return Err(StoreError::Rejected(model::LambdaError::invalid_parameter(format!(
                "an account id is 12 digits, got {id:?}"
            ))));
        }
        let created_ms = now_ms();
        if !self.rows.insert_account(&id, name, created_ms)? {
            return Err(StoreError::AlreadyExists);
        }
        Ok(Account { id, name: name.to_string(), created_ms })
    }

    pub fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.rows.list_accounts()
    }

    pub fn account_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.rows.account_exists(id)
    }

    /// Creates an access key for `account`; the returned secret is not kept in the clear.
    pub fn create_key(&self, account: &str) -> Result<NewKey, StoreError> {
        if !self.account_exists(account)? {
            return Err(StoreError::NotFound);
        }
        let access_key_id = format!("AKIA{}", random_string(16, UPPER_DIGITS)?);
        let secret = random_string(40, SECRET_CHARS)?;
        let nonce = random_bytes::<12>()?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret.as_bytes())
            .map_err(|_| StoreError::Corrupt("cannot seal the secret".into()))?;
        self.rows.insert_key(&access_key_id, account, &sealed, &nonce, now_ms())?;
        Ok(NewKey { access_key_id, secret_access_key: secret, account: account.to_string() })
    }

    pub fn list_keys(&self, account: Option<&str>) -> Result<Vec<AccessKey>, StoreError> {
        self.rows.list_keys(account)
    }

    /// Revokes a key; `false` if there is no such active key.
    pub fn revoke_key(&self, access_key_id: &str) -> Result<bool, StoreError> {
        self.rows.revoke_key(access_key_id, now_ms())
    }

    /// The key the account's functions run with (created on first use, and again if it was
    /// revoked): functions sign their calls to Stratus's services with it.
    pub fn function_key(&self, account: &str) -> Result<(String, String), StoreError> {
        let current = self.rows.function_key_id(account)?;
        if let Some(id) = current
            && let Some((_, secret)) = self.lookup(&id)?
        {
            return Ok((id, secret));
        }
        let key = self.create_key(account)?;
        self.rows.set_function_key(account, &key.access_key_id)?;
        Ok((key.access_key_id, key.secret_access_key))
    }

    /// The account and secret of an active key.
    pub fn lookup(&self, access_key_id: &str) -> Result<Option<(String, String)>, StoreError> {
        let Some((account, sealed, nonce)) = self.rows.sealed(access_key_id)? else { return Ok(None) };
        if nonce.len() != 12 {
            return Err(StoreError::Corrupt("bad nonce".into()));
        }
        let secret = self
            .cipher
            .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
            .map_err(|_| StoreError::Corrupt("a secret cannot be unsealed (was secrets.key replaced?)".into()))?;
        let secret = String::from_utf8(secret).map_err(|_| StoreError::Corrupt("a secret is not text".into()))?;
        Ok(Some((account, secret)))
    }
}

/// The accounts in `accounts.db`.
struct SqliteRows(Mutex<Connection>);

impl SqliteRows {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AccountRows for SqliteRows {
    fn insert_account(&self, id: &str, name: &str, created_ms: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "INSERT OR IGNORE INTO accounts (id, name, created_ms) VALUES (?1, ?2, ?3)",
            params![id, name, created_ms],
        )? > 0)
    }

    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, name, created_ms FROM accounts ORDER BY created_ms, id")?;
        let rows = stmt.query_map([], |r| Ok(Account { id: r.get(0)?, name: r.get(1)?, created_ms: r.get(2)? }))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn account_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().query_row("SELECT 1 FROM accounts WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
    }

    fn insert_key(
        &self,
        id: &str,
        account: &str,
        sealed: &[u8],
        nonce: &[u8],
        created_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO access_keys (access_key_id, account, sealed_secret, nonce, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, account, sealed, nonce, created_ms],
        )?;
        Ok(())
    }

    fn list_keys(&self, account: Option<&str>) -> Result<Vec<AccessKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT access_key_id, account, created_ms, revoked_ms FROM access_keys
             WHERE ?1 IS NULL OR account = ?1 ORDER BY created_ms, access_key_id",
        )?;
        let rows = stmt.query_map([account], |r| {
            Ok(AccessKey { access_key_id: r.get(0)?, account: r.get(1)?, created_ms: r.get(2)?, revoked_ms: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn revoke_key(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE access_keys SET revoked_ms = ?2 WHERE access_key_id = ?1 AND revoked_ms IS NULL",
            params![id, now_ms],
        )? > 0)
    }

    fn function_key_id(&self, account: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT access_key_id FROM function_keys WHERE account = ?1", [account], |r| r.get(0))
            .optional()?)
    }

    fn set_function_key(&self, account: &str, key_id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO function_keys (account, access_key_id) VALUES (?1, ?2)",
            params![account, key_id],
        )?;
        Ok(())
    }

    fn sealed(&self, id: &str) -> Result<Option<Sealed>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT account, sealed_secret, nonce FROM access_keys WHERE access_key_id = ?1 AND revoked_ms IS NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_compare_exactly() {
        assert!(constant_time_eq("abc", "abc") && !constant_time_eq("abc", "abd") && !constant_time_eq("abc", "ab"));
    }

    #[test]
    fn keys_are_sealed_looked_up_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let a = Accounts::open(dir.path(), "000000000000").unwrap();
        let acct = a.create_account(Some("111111111111"), "team-a").unwrap();
        assert!(matches!(a.create_account(Some("111111111111"), "again"), Err(StoreError::AlreadyExists)));
        assert!(a.create_account(Some("12"), "bad").is_err());
        assert_eq!(a.list_accounts().unwrap().len(), 2);
        let key = a.create_key(&acct.id).unwrap();
        assert!(key.access_key_id.starts_with("AKIA") && key.access_key_id.len() == 20);
        assert_eq!(key.secret_access_key.len(), 40);
        assert_eq!(a.lookup(&key.access_key_id).unwrap(), Some((acct.id.clone(), key.secret_access_key.clone())));
        // The secret is nowhere in the database file in the clear.
        drop(a);
        let raw = std::fs::read(dir.path().join("accounts.db")).unwrap();
        let wal = std::fs::read(dir.path().join("accounts.db-wal")).unwrap_or_default();
        let needle = key.secret_access_key.as_bytes();
        assert!(!raw.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle));
        // Reopened with the same sealing key, it still unseals; revoked, it is gone.
        let a = Accounts::open(dir.path(), "000000000000").unwrap();
        assert!(a.lookup(&key.access_key_id).unwrap().is_some());
        assert!(a.revoke_key(&key.access_key_id).unwrap());
        assert!(!a.revoke_key(&key.access_key_id).unwrap());
        assert_eq!(a.lookup(&key.access_key_id).unwrap(), None);
        assert!(matches!(a.create_key("222222222222"), Err(StoreError::NotFound)));
        assert!(a.list_keys(Some("111111111111")).unwrap()[0].revoked_ms.is_some());
    }
}
