//! The store's conformance suite: every metadata test runs against SQLite and PostgreSQL
//! (`both!`), so the two implementations keep the same behaviour. Tests here cover what spans
//! modules: paging, the async queue, the ledger and accounts on both backends, and, for
//! PostgreSQL, that no operation of one account reads or changes another's rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::meta::*;
use crate::pg::{PgPool, testing};
use crate::{AsyncEvent, Db, Meta, StoreError};

/// Expands a test body into one test per backend: `both!(name, |db| { … })`.
macro_rules! both {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::meta::*;

            fn run($db: &mut dyn $crate::Meta) $body

            #[test]
            fn sqlite() {
                $crate::conformance::sqlite(run)
            }

            #[test]
            fn postgres() {
                $crate::conformance::postgres(run)
            }
        }
    };
}
pub(crate) use both;

/// Runs `test` on a fresh SQLite database.
pub(crate) fn sqlite(test: fn(&mut dyn Meta)) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Db::open(&dir.path().join("db.sqlite")).unwrap();
    test(&mut db);
}

/// A runtime whose blocking threads may drive database calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Runs `test` on a fresh PostgreSQL database (skipped without PostgreSQL, except under CI).
pub(crate) fn postgres(test: fn(&mut dyn Meta)) {
    with_pool(move |pool| {
        let mut db = pool.db(&Arc::from("000000000000")).unwrap();
        test(&mut db);
    });
}

/// Runs `f` on a blocking thread with a pool on a fresh, migrated database.
pub(crate) fn with_pool(f: impl FnOnce(PgPool) + Send + 'static) {
    let Some(url) = testing::database() else { return };
    runtime().block_on(async move {
        let pool = PgPool::connect(&url).await.unwrap();
        tokio::task::spawn_blocking(move || f(pool)).await.unwrap();
    });
}

pub(crate) fn config(name: &str) -> model::FunctionConfig {
    crate::db::tests::config(name)
}

fn event(function: &str) -> AsyncEvent {
    AsyncEvent {
        id: 0,
        request_id: "r".into(),
        function: function.into(),
        qualifier: None,
        payload: b"{}".to_vec(),
        received_ms: 1,
        trace: None,
        trigger: None,
        delivery: None,
        attempts: 0,
        next_attempt_ms: 1,
    }
}

both!(functions_list_in_pages_and_count_their_code, |db| {
    for n in ["c", "a", "b", "B"] {
        db.create_function(&config(n), &BTreeMap::new()).unwrap();
    }
    assert!(matches!(db.create_function(&config("a"), &BTreeMap::new()), Err(StoreError::AlreadyExists)));
    let page: Vec<String> = db.list_functions(None, 2).unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(page, ["B", "a"], "names sort byte-wise");
    let rest: Vec<String> = db.list_functions(Some("a"), 5).unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(rest, ["b", "c"]);
    assert_eq!(db.usage().unwrap(), (4, 12));
    assert!(db.referenced_code().unwrap().contains("abc"));
});

both!(versions_aliases_and_settings_go_with_their_function, |db| {
    let mut tags = BTreeMap::new();
    tags.insert("team".to_string(), "a".to_string());
    db.create_function(&config("f"), &tags).unwrap();
    let v1 = db.publish_version("f", Some("one"), 5, &mut |_| Ok(())).unwrap();
    assert_eq!(v1.version, "1");
    let again = db.publish_version("f", None, 6, &mut |_| Ok(())).unwrap();
    assert_eq!(again.version, "1", "an unchanged $LATEST publishes nothing new");
    db.update_latest("f", None, &mut |c| {
        c.memory_mb = 256;
        Ok(())
    })
    .unwrap();
    let refused = db.publish_version("f", None, 7, &mut |_| Err(StoreError::RevisionMismatch));
    assert!(matches!(refused, Err(StoreError::RevisionMismatch)));
    assert_eq!(db.publish_version("f", None, 7, &mut |_| Ok(())).unwrap().version, "2");
    let versions: Vec<String> = db.list_versions("f").unwrap().into_iter().map(|c| c.version).collect();
    assert_eq!(versions, ["$LATEST", "1", "2"]);
    let alias = model::versions::AliasConfig {
        name: "live".into(),
        function_version: "1".into(),
        description: String::new(),
        routing: BTreeMap::new(),
        revision_id: "r".into(),
    };
    db.put_alias("f", &alias, true).unwrap();
    assert!(matches!(db.put_alias("f", &alias, true), Err(StoreError::AlreadyExists)));
    assert!(matches!(db.delete_version("f", "1"), Err(StoreError::Rejected(_))), "an alias uses it");
    assert_eq!(db.list_aliases("f").unwrap().len(), 1);
    db.set_reserved_concurrency("f", Some(3)).unwrap();
    assert_eq!(db.reserved_concurrency("f").unwrap(), Some(Some(3)));
    assert_eq!(db.all_reserved().unwrap(), [("f".to_string(), 3)]);
    assert_eq!(db.reserved_concurrency("nope").unwrap(), None);
    let eic = model::versions::EventInvokeConfig::default();
    db.put_event_invoke_config("f", "live", &eic).unwrap();
    assert_eq!(db.list_event_invoke_configs("f").unwrap().len(), 1);
    let pc = model::versions::ProvisionedConfig { qualifier: "live".into(), requested: 2, last_modified_ms: 9 };
    db.put_provisioned("f", &pc).unwrap();
    assert_eq!(db.list_provisioned(None).unwrap(), [("f".to_string(), pc.clone())]);
    assert_eq!(db.tags("f").unwrap(), Some(tags));
    assert!(db.delete_alias("f", "live").unwrap());
    assert!(db.list_provisioned(Some("f")).unwrap().is_empty(), "the alias's settings go with it");
    assert!(db.delete_version("f", "1").unwrap());
    assert!(db.delete_function("f").unwrap());
    assert!(!db.delete_function("f").unwrap());
    assert_eq!(db.get_version("f", "2").unwrap(), None);
    assert!(db.list_event_invoke_configs("f").unwrap().is_empty());
});

/// Every account-scoped operation, run by one account, while another account has rows of the
/// same names: afterwards the other's rows are exactly as they were.
#[test]
fn postgres_accounts_never_see_each_others_rows() {
    with_pool(|pool| {
        let mut a = pool.db(&Arc::from("111111111111")).unwrap();
        let mut b = pool.db(&Arc::from("222222222222")).unwrap();
        b.create_function(&config("f"), &BTreeMap::new()).unwrap();
        b.set_reserved_concurrency("f", Some(7)).unwrap();
        b.publish_version("f", None, 1, &mut |_| Ok(())).unwrap();
        let snapshot = |b: &dyn Meta| {
            (
                b.list_functions(None, 100).unwrap(),
                b.list_versions("f").unwrap(),
                b.all_reserved().unwrap(),
                b.usage().unwrap(),
                b.list_routes().unwrap(),
                b.list_groups().unwrap(),
                b.list_mappings(None, None, 100).unwrap().len(),
                b.queued_events().unwrap(),
            )
        };
        let before = snapshot(&b);
        // Account A sees none of it.
        assert!(a.list_functions(None, 100).unwrap().is_empty());
        assert_eq!(a.get_version("f", "$LATEST").unwrap(), None);
        assert_eq!(a.reserved_concurrency("f").unwrap(), None);
        assert!(a.all_reserved().unwrap().is_empty());
        assert!(a.referenced_code().unwrap().is_empty());
        assert_eq!(a.usage().unwrap(), (0, 0));
        // A's writes by the same names touch only A.
        assert!(matches!(a.update_latest("f", None, &mut |_| Ok(())), Err(StoreError::NotFound)));
        assert!(!a.set_reserved_concurrency("f", None).unwrap());
        assert!(!a.delete_function("f").unwrap());
        assert!(!a.set_tags("f", &BTreeMap::new()).unwrap());
        a.create_function(&config("f"), &BTreeMap::new()).unwrap();
        a.publish_version("f", None, 1, &mut |_| Ok(())).unwrap();
        a.put_route(&model::routes::RouteConfig {
            route_key: "GET /x".into(),
            function: "f".into(),
            qualifier: None,
            payload_format: "2.0".into(),
            created_ms: 1,
        })
        .unwrap();
        a.create_group("g", 1).unwrap();
        assert!(a.delete_function("f").unwrap());
        assert_eq!(snapshot(&b), before, "account B's rows are untouched by account A");
        assert!(b.get_version("f", "1").unwrap().is_some());
    });
}

/// The queue writer of each backend: inserts need the function, claims lease, deleting the
/// function drops its events, and (PostgreSQL) claims never cross accounts.
#[test]
fn sqlite_queue_claims_lease_and_follow_their_function() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let mut db = Db::open(&path).unwrap();
    let q = crate::QueueWriter::start(&path).unwrap();
    runtime().block_on(queue_behaviour(&mut db, &q));
}

#[test]
fn postgres_queue_claims_lease_and_follow_their_function() {
    with_pool(|pool| {
        let handle = tokio::runtime::Handle::current();
        let pg = crate::pg::PgQueue::start(pool.clone(), "node-a".into());
        let q = crate::QueueWriter::cluster(pg.clone(), Arc::from("000000000000"));
        let mut db = pool.db(&Arc::from("000000000000")).unwrap();
        handle.block_on(queue_behaviour(&mut db, &q));
        // Another account's claims never see this account's events.
        db.create_function(&config("g"), &BTreeMap::new()).unwrap();
        handle.block_on(q.insert(event("g"))).unwrap();
        let other = crate::QueueWriter::cluster(pg, Arc::from("111111111111"));
        assert!(handle.block_on(other.claim(i64::MAX - 1, 10, 0)).unwrap().is_empty());
        assert_eq!(handle.block_on(q.claim(i64::MAX - 1, 10, 0)).unwrap().len(), 1);
    });
}

async fn queue_behaviour(db: &mut dyn Meta, q: &crate::QueueWriter) {
    db.create_function(&config("f"), &BTreeMap::new()).unwrap();
    assert!(matches!(q.insert(event("missing")).await, Err(StoreError::NotFound)));
    let id = q.insert(event("f")).await.unwrap();
    let claimed = q.claim(10, 10, 1000).await.unwrap();
    assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
    assert!(q.claim(10, 10, 1000).await.unwrap().is_empty(), "a claimed event is leased");
    assert_eq!(q.claim(1000, 10, 2000).await.unwrap().len(), 1, "the lease expires");
    q.reschedule(id, 1, 5000);
    assert!(q.claim(4999, 10, 9000).await.unwrap().is_empty(), "rescheduled to later");
    assert_eq!(db.next_due().unwrap(), Some(5000));
    assert!(db.delete_function("f").unwrap());
    assert!(q.claim(i64::MAX - 1, 10, 0).await.unwrap().is_empty());
    assert_eq!(db.queued_events().unwrap(), 0);
}

/// A dead node's claimed events are made due again by whoever declares it dead, and its
/// leases are freed; a lease's token grows with each holder and fences checkpoints.
#[test]
fn postgres_a_dead_nodes_claims_and_leases_are_released() {
    with_pool(|pool| {
        let handle = tokio::runtime::Handle::current();
        let q = crate::QueueWriter::cluster(
            crate::pg::PgQueue::start(pool.clone(), "dead-node".into()),
            Arc::from("000000000000"),
        );
        let mut db = pool.db(&Arc::from("000000000000")).unwrap();
        db.create_function(&config("f"), &BTreeMap::new()).unwrap();
        let source = model::esm::Source {
            kind: model::esm::SourceKind::Nats,
            endpoints: vec!["nats://h".into()],
            name: "S".into(),
        };
        db.create_mapping(&model::esm::Mapping::new("m".into(), "f".into(), source, None), 1).unwrap();
        let (t1, t2) = handle.block_on(async {
            pool.register_node("dead-node", "n1", "127.0.0.1:1").await.unwrap();
            pool.register_node("live-node", "n2", "127.0.0.1:2").await.unwrap();
            q.insert(event("f")).await.unwrap();
            assert_eq!(q.claim(10, 10, i64::MAX / 2).await.unwrap().len(), 1);
            let ttl = std::time::Duration::from_secs(30);
            let lease = crate::pg::cluster::mapping_lease("000000000000", "m");
            let t1 = pool.acquire_lease(&lease, "dead-node", ttl).await.unwrap().unwrap();
            assert_eq!(pool.acquire_lease(&lease, "live-node", ttl).await.unwrap(), None, "held");
            // Silence the dead node's heartbeat for longer than DEAD_AFTER.
            let mut c = pool.get().await.unwrap();
            c.execute(
                "UPDATE nodes SET heartbeat_at = now() - interval '1 minute' WHERE incarnation = 'dead-node'",
                &[],
            )
            .await
            .unwrap();
            assert_eq!(pool.declare_dead().await.unwrap(), ["dead-node"]);
            assert!(!pool.heartbeat("dead-node", "live", "{}").await.unwrap(), "a dead incarnation stays dead");
            assert_eq!(q.claim(model::logfmt::now_ms() + 1, 10, 20).await.unwrap().len(), 1, "its event is due again");
            let t2 = pool.acquire_lease(&lease, "live-node", ttl).await.unwrap().unwrap();
            assert!(t2 > t1, "a new holder gets a larger token");
            assert!(!pool.renew_lease(&lease, "dead-node", t1, ttl).await.unwrap());
            assert!(pool.renew_lease(&lease, "live-node", t2, ttl).await.unwrap());
            let states: Vec<(String, String)> =
                pool.nodes().await.unwrap().into_iter().map(|n| (n.incarnation, n.state)).collect();
            assert_eq!(states, [("live-node".to_string(), "live".to_string()), ("dead-node".into(), "dead".into())]);
            (t1, t2)
        });
        assert!(!db.set_checkpoint("m", "p", "1", 1, Some(t1)).unwrap(), "the old holder is fenced off");
        assert!(db.set_checkpoint("m", "p", "2", 1, Some(t2)).unwrap());
        assert_eq!(db.checkpoint("m", "p").unwrap().as_deref(), Some("2"));
    });
}

#[test]
fn postgres_schema_newer_than_the_binary_is_refused() {
    let Some(url) = testing::database() else { return };
    runtime().block_on(async move {
        PgPool::connect(&url).await.unwrap();
        PgPool::connect(&url).await.expect("migrating twice is a no-op");
        let pool = PgPool::connect(&url).await.unwrap();
        let mut c = pool.get().await.unwrap();
        c.execute("INSERT INTO schema_migrations (version, description) VALUES (9999, 'from the future')", &[])
            .await
            .unwrap();
        match PgPool::connect(&url).await {
            Err(e @ StoreError::SchemaTooNew { database: 9999, .. }) => {
                assert!(e.to_string().contains("upgrade stratus"), "{e}")
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
    });
}

#[test]
fn postgres_accounts_seal_keys_and_code_is_shared() {
    with_pool(|pool| {
        let handle = tokio::runtime::Handle::current();
        let a = handle.block_on(crate::accounts::Accounts::open_cluster(&pool, "000000000000")).unwrap();
        let acct = a.create_account(Some("111111111111"), "team").unwrap();
        assert!(matches!(a.create_account(Some("111111111111"), "again"), Err(StoreError::AlreadyExists)));
        let key = a.create_key(&acct.id).unwrap();
        // A second node opening the same database unseals the same key.
        let b = handle.block_on(crate::accounts::Accounts::open_cluster(&pool, "000000000000")).unwrap();
        assert_eq!(b.lookup(&key.access_key_id).unwrap(), Some((acct.id.clone(), key.secret_access_key.clone())));
        assert_eq!(b.list_accounts().unwrap().len(), 2);
        assert!(b.revoke_key(&key.access_key_id).unwrap());
        assert_eq!(a.lookup(&key.access_key_id).unwrap(), None);
        assert_eq!(a.sign_url("x"), b.sign_url("x"));
        // Code: stored once, read back whole (over several chunks).
        let blobs = crate::pg::CodeBlobs::new(pool.clone());
        let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        handle.block_on(blobs.put("000000000000", "sha", &bytes)).unwrap();
        handle.block_on(blobs.put("000000000000", "sha", &bytes)).unwrap();
        assert_eq!(handle.block_on(blobs.get("000000000000", "sha")).unwrap(), Some(bytes));
        assert_eq!(handle.block_on(blobs.get("111111111111", "sha")).unwrap(), None, "per account");
    });
}

#[test]
fn postgres_ledger_sums_like_sqlite() {
    use model::ledger::{GroupBy, Outcome, Record};
    let rec = crate::ledger::tests::rec;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::ledger::Ledger::open(&dir.path().join("ledger.db")).unwrap();
    with_pool(move |pool| {
        let handle = tokio::runtime::Handle::current();
        let pg = crate::ledger::Ledger::cluster(crate::pg::PgLedger::start(pool));
        let day = 86_400_000_000;
        for l in [&sqlite, &pg] {
            l.record(rec("a", "f", 10, 100, Outcome::Success));
            l.record(rec("b", "f", day + 10, 50, Outcome::Timeout));
            l.record(Record { billed_ms: 0, cold: true, ..rec("c", "g", 20, 0, Outcome::Throttled) });
            handle.block_on(l.flush());
        }
        for group in [None, Some(GroupBy::Function), Some(GroupBy::Day), Some(GroupBy::Version), Some(GroupBy::Trigger)]
        {
            let s = handle.block_on(sqlite.usage(None, 0, i64::MAX, group)).unwrap();
            let p = handle.block_on(pg.usage(None, 0, i64::MAX, group)).unwrap();
            assert_eq!(format!("{s:?}"), format!("{p:?}"), "{group:?}");
        }
        assert_eq!(handle.block_on(pg.count()).unwrap(), 3);
        assert_eq!(handle.block_on(pg.by_request("b".into())).unwrap()[0].outcome, Outcome::Timeout);
        assert_eq!(handle.block_on(pg.recent(Some("000000000000".into()), 1)).unwrap()[0].request_id, "c");
    });
}

/// Concurrency grants of one account never add up to more than its limit; a dead node's go
/// with it. Changes are logged in order.
#[test]
fn postgres_grants_stay_under_the_limit_and_changes_are_logged() {
    with_pool(|pool| {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(async {
            assert_eq!(pool.grant("a", "n1", 8, 10).await.unwrap(), 8);
            assert_eq!(pool.grant("a", "n2", 8, 10).await.unwrap(), 2, "what n1 leaves");
            assert_eq!(pool.grant("b", "n2", 8, 10).await.unwrap(), 8, "another account's limit is its own");
            assert_eq!(pool.grant("a", "n1", 3, 10).await.unwrap(), 3, "a smaller want gives some back");
            assert_eq!(pool.grant("a", "n2", 8, 10).await.unwrap(), 7);
            pool.register_node("n1", "n1", "http://x").await.unwrap();
            let mut c = pool.get().await.unwrap();
            c.execute("UPDATE nodes SET heartbeat_at = now() - interval '1 minute'", &[]).await.unwrap();
            assert_eq!(pool.declare_dead().await.unwrap(), ["n1"]);
            assert_eq!(pool.grant("a", "n2", 10, 10).await.unwrap(), 10, "the dead node's grant is free again");
            assert_eq!(pool.last_change().await.unwrap(), 0);
            let s1 = pool.record_change("n2", "a", Some("f"), "/2015-03-31/functions/f/configuration").await.unwrap();
            let s2 = pool.record_change("n2", "a", None, "/schedules/s").await.unwrap();
            assert!(s2 > s1);
            let all = pool.changes_since(0, 10).await.unwrap();
            assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [s1, s2]);
            assert_eq!(all[0].function.as_deref(), Some("f"));
            assert_eq!(pool.changes_since(s1, 10).await.unwrap().len(), 1);
            assert_eq!(pool.last_change().await.unwrap(), s2);
        });
    });
}

/// A node that restarts supersedes its earlier run at once: what that run held is released
/// without waiting for it to be found silent.
#[test]
fn postgres_a_restarted_node_supersedes_its_earlier_run() {
    with_pool(|pool| {
        tokio::runtime::Handle::current().block_on(async {
            let ttl = std::time::Duration::from_secs(30);
            pool.register_node("n1-first", "n1", "http://a").await.unwrap();
            assert!(pool.acquire_lease("esm/x/y", "n1-first", ttl).await.unwrap().is_some());
            pool.register_node("n1-second", "n1", "http://b").await.unwrap();
            assert!(pool.acquire_lease("esm/x/y", "other", ttl).await.unwrap().is_some(), "its lease was released");
            let nodes = pool.nodes().await.unwrap();
            let state = |inc: &str| nodes.iter().find(|n| n.incarnation == inc).map(|n| n.state.clone());
            assert_eq!(state("n1-first").as_deref(), Some("dead"));
            assert_eq!(state("n1-second").as_deref(), Some("live"));
            assert!(!pool.heartbeat("n1-first", "live", "{}").await.unwrap());
        });
    });
}
