//! PostgreSQL table changes through logical replication: a replication slot per mapping
//! (`stratus_<uuid>`, decoded with wal2json), read with `pg_logical_slot_peek_changes` and
//! advanced with `pg_replication_slot_advance` only after a batch succeeded. The slot keeps
//! the checkpoint, so changes survive Stratus and PostgreSQL restarts. The server needs
//! `wal_level=logical` and the wal2json plugin (Debian: `postgresql-15-wal2json`). Deleting
//! the mapping drops its slot.
//!
//! The record is DynamoDB Streams' shape (§4.6); `OldImage` holds the whole old row when the
//! table has `REPLICA IDENTITY FULL`, else its key:
//!
//! ```json
//! {"eventID": "00000000000023456789000042", "eventName": "MODIFY", "eventVersion": "1.1",
//!  "eventSource": "stratus:postgres", "awsRegion": "us-east-1",
//!  "eventSourceARN": "arn:stratus:postgres:us-east-1:000000000000:public.orders",
//!  "dynamodb": {"ApproximateCreationDateTime": 1700000000, "Keys": {"id": {"N": "1"}},
//!               "NewImage": {"id": {"N": "1"}, "note": {"S": "b"}}, "OldImage": {"id": {"N": "1"}, "note": {"S": "a"}},
//!               "SequenceNumber": "00000000000023456789000042", "SizeBytes": 52, "StreamViewType": "NEW_AND_OLD_IMAGES"},
//!  "table": "public.orders"}
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use model::esm::Mapping;
use serde_json::{Map, Value, json};
use tokio_postgres::{Client, NoTls};

use super::{Error, Record, Source, Token, now_ms};

pub(crate) struct Postgres {
    client: Arc<Client>,
    slot: String,
    table: String,
    buffer: VecDeque<Record>,
    /// Rows are numbered from the connection on. A peek returns the rows from the slot's
    /// confirmed position, always the same ones until it moves: `base` is the number of the
    /// first, `scanned` the number after the last one read into the buffer.
    base: u64,
    scanned: u64,
    /// Transaction ends read (row number, LSN): the slot advances to one once every change
    /// before it is done (LSNs of changes are not unique; transaction ends are the positions).
    ends: VecDeque<(u64, String)>,
    /// The slot's confirmed position as this poller last saw or set it.
    confirmed: Option<String>,
    arn: String,
    region: String,
}

/// The slot of a mapping.
pub fn slot_name(uuid: &str) -> String {
    format!("stratus_{}", uuid.replace('-', "")).to_lowercase()
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

async fn connect_client(url: &str) -> Result<Client, Error> {
    let (client, conn) = tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
        .await
        .map_err(|_| "timed out connecting to PostgreSQL")??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Drops a deleted mapping's replication slot (a slot left behind would keep WAL forever).
pub async fn drop_slot(mapping: &Mapping) -> Result<(), Error> {
    let client = connect_client(&mapping.source.endpoints[0]).await?;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot_name(&mapping.uuid)],
        )
        .await?;
    Ok(())
}

impl Postgres {
    pub(crate) async fn connect(mapping: Arc<Mapping>, scope: &model::Scope) -> Result<Self, Error> {
        let client = connect_client(&mapping.source.endpoints[0]).await?;
        let slot = slot_name(&mapping.uuid);
        let exists = client.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await?;
        if exists.is_none() {
            client.execute("SELECT pg_create_logical_replication_slot($1, 'wal2json')", &[&slot]).await?;
            tracing::info!(mapping = %mapping.uuid, slot, "replication slot created");
        }
        let name = &mapping.source.name;
        let table = if name.contains('.') { name.clone() } else { format!("public.{name}") };
        let mut me = Self {
            client: Arc::new(client),
            slot,
            table,
            buffer: VecDeque::new(),
            base: 0,
            scanned: 0,
            ends: VecDeque::new(),
            confirmed: None,
            arn: mapping.source.arn(scope),
            region: scope.region.clone(),
        };
        me.confirmed = me.slot_position().await?;
        Ok(me)
    }

    async fn slot_position(&self) -> Result<Option<String>, Error> {
        let row = self
            .client
            .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&self.slot])
            .await?;
        match row {
            Some(r) => Ok(r.get(0)),
            None => Err(format!("the replication slot {} is gone", self.slot).into()),
        }
    }

    /// Row numbers hold while only this poller moves the slot. If something else moved it
    /// (with nothing in hand here), numbering starts again from where it is now.
    async fn check_slot(&mut self) -> Result<(), Error> {
        let now = self.slot_position().await?;
        if now != self.confirmed {
            tracing::warn!(slot = %self.slot, was = ?self.confirmed, now = ?now, "the replication slot was moved by someone else; reading on from its position");
            self.base = self.scanned;
            self.ends.clear();
            self.confirmed = now;
        }
        Ok(())
    }

    /// Reads the changes after the ones already read into the buffer.
    async fn peek(&mut self, want: usize) -> Result<(), Error> {
        // `upto` counts rows, transaction boundaries included (whole transactions come back).
        let upto = i32::try_from((self.scanned - self.base) as usize + 3 * want + 2).unwrap_or(i32::MAX);
        let rows = self
            .client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2,
                   'format-version', '2', 'include-pk', 'true', 'include-timestamp', 'true',
                   'include-transaction', 'true', 'add-tables', $3)",
                &[&self.slot, &upto, &wal2json_table(&self.table)],
            )
            .await?;
        for (i, row) in rows.iter().enumerate() {
            let n = self.base + i as u64;
            if n < self.scanned {
                continue;
            }
            self.scanned = n + 1;
            let lsn: &str = row.get(0);
            let data: Value = serde_json::from_str(row.get::<_, &str>(1))?;
            if data.get("action").and_then(Value::as_str) == Some("C") {
                self.ends.push_back((n, lsn.to_string()));
            } else if let Some(r) = self.record(n, parse_lsn(lsn).unwrap_or(0), &data) {
                self.buffer.push_back(r);
            }
        }
        Ok(())
    }

    fn record(&self, row: u64, lsn: u64, change: &Value) -> Option<Record> {
        let name = match change.get("action")?.as_str()? {
            "I" => "INSERT",
            "U" => "MODIFY",
            "D" => "REMOVE",
            _ => return None,
        };
        let new = change.get("columns").map(image);
        let old = change.get("identity").map(image);
        let pk: Vec<&str> = change
            .get("pk")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        let keys: Map<String, Value> = new
            .as_ref()
            .or(old.as_ref())
            .map(|img| {
                img.iter().filter(|(k, _)| pk.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .unwrap_or_default();
        let arrival_ms = change.get("timestamp").and_then(Value::as_str).and_then(pg_time_ms).unwrap_or_else(now_ms);
        // LSNs repeat within and across transactions; with the row number they order and name changes.
        let seq = format!("{lsn:020}{:06}", row % 1_000_000);
        let size = change.to_string().len();
        let mut ddb = json!({
            "ApproximateCreationDateTime": arrival_ms / 1000,
            "Keys": keys,
            "SequenceNumber": seq,
            "SizeBytes": size,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(n) = new {
            ddb["NewImage"] = Value::Object(n);
        }
        if let Some(o) = old {
            ddb["OldImage"] = Value::Object(o);
        }
        Some(Record {
            partition: self.table.clone(),
            id: seq.clone(),
            arrival_ms,
            body: json!({
                "eventID": seq,
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "stratus:postgres",
                "awsRegion": self.region,
                "dynamodb": ddb,
                "eventSourceARN": self.arn,
                "table": self.table,
            })
            .to_string(),
            token: Token::Seq(row),
        })
    }

    /// Moves the slot past every transaction that ended before row `next` (the first row not
    /// done).
    /// Moves the slot to the end of the last whole transaction before row `next`. What this
    /// poller reads next assumes it is done; if it fails, the poller connects anew.
    fn advance(&mut self, next: u64) -> BoxFuture<'static, Result<(), Error>> {
        let mut to = None;
        while let Some((n, _)) = self.ends.front() {
            if *n >= next {
                break;
            }
            to = self.ends.pop_front();
        }
        let Some((n, lsn)) = to else { return Box::pin(async { Ok(()) }) };
        // The rows up to that transaction's end are gone from the next peek.
        self.base = n + 1;
        self.confirmed = Some(lsn.clone());
        let (client, slot) = (self.client.clone(), self.slot.clone());
        Box::pin(async move {
            client.execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&slot, &lsn]).await?;
            Ok(())
        })
    }
}

/// wal2json's `add-tables` (its own escaping: `\` before `,`, `.` inside names is not expected).
fn wal2json_table(t: &str) -> String {
    t.replace(',', "\\,")
}

/// `2026-12-01 10:00:00.123456+00` → Unix ms.
fn pg_time_ms(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory]"
    );
    let t = time::OffsetDateTime::parse(s, &fmt).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// wal2json columns → DynamoDB attribute values.
fn image(columns: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for c in columns.as_array().into_iter().flatten() {
        let Some(name) = c.get("name").and_then(Value::as_str) else { continue };
        let ty = c.get("type").and_then(Value::as_str).unwrap_or("");
        let v = c.get("value").unwrap_or(&Value::Null);
        out.insert(name.to_string(), attribute(ty, v));
    }
    out
}

fn attribute(ty: &str, v: &Value) -> Value {
    match v {
        Value::Null => json!({"NULL": true}),
        Value::Bool(b) => json!({"BOOL": b}),
        Value::Number(n) => json!({"N": n.to_string()}),
        Value::String(s) if matches!(ty, "numeric" | "decimal" | "money") => json!({"N": s}),
        Value::String(s) => json!({"S": s}),
        other => json!({"S": other.to_string()}),
    }
}

impl Source for Postgres {
    fn fetch(&mut self, max: usize, window: Duration, idle: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(20);
            loop {
                if self.buffer.is_empty() && self.ends.is_empty() {
                    self.check_slot().await?;
                }
                if self.buffer.len() < max {
                    self.peek(max - self.buffer.len()).await?;
                }
                let waited = started.elapsed();
                if self.buffer.len() >= max
                    || (!self.buffer.is_empty() && waited >= window)
                    || (self.buffer.is_empty() && waited >= idle)
                {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
            let n = self.buffer.len().min(max);
            Ok(self.buffer.drain(..n).collect())
        })
    }

    /// The slot advances to what is done, judged by what is still in hand: no fetching ahead.
    fn prefetches(&self) -> bool {
        false
    }

    fn commit(&mut self, done: &[Record]) -> BoxFuture<'static, Result<(), Error>> {
        let _ = done;
        // Everything before the first record still in hand is done.
        let next = match self.buffer.front().map(|r| &r.token) {
            Some(Token::Seq(row)) => *row,
            _ => self.scanned,
        };
        self.advance(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_types() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(attribute("integer", &json!(5)), json!({"N": "5"}));
        assert_eq!(attribute("numeric", &json!("1.50")), json!({"N": "1.50"}));
        assert_eq!(attribute("text", &json!("x")), json!({"S": "x"}));
        assert_eq!(attribute("boolean", &json!(true)), json!({"BOOL": true}));
        assert_eq!(attribute("text", &Value::Null), json!({"NULL": true}));
        assert_eq!(pg_time_ms("1970-01-01 00:00:01.5+00"), Some(1500));
        assert_eq!(slot_name("AB-cd"), "stratus_abcd");
    }
}
