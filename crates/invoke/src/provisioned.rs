//! Provisioned concurrency: keeps the requested number of environments initialised for a
//! version or alias, ahead of traffic, with `AWS_LAMBDA_INITIALIZATION_TYPE` set to
//! `provisioned-concurrency`. Allocation is asynchronous: a configuration reports IN_PROGRESS
//! until every environment is up, then READY (FAILED if they cannot start).
//!
//! A reconciler re-reads the configurations whenever one changes (and every few seconds, to
//! replace environments that died) and starts or demotes environments to match.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use model::versions::{ProvisionedConfig, Qualifier};
use tokio::sync::Notify;

use crate::env::Environment;
use crate::{Invoker, lock};

/// What a provisioned-concurrency configuration has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedStatus {
    pub requested: u32,
    pub allocated: u32,
    /// `IN_PROGRESS`, `READY` or `FAILED`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub last_modified_ms: i64,
}

#[derive(Default)]
pub struct Provisioner {
    wake: Notify,
    /// By (function, qualifier).
    status: std::sync::Mutex<HashMap<(String, String), ProvisionedStatus>>,
}

impl Provisioner {
    /// A configuration (or something it depends on) changed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }
}

impl Invoker {
    /// The state of one configuration (`None` if there is none).
    pub fn provisioned_status(&self, function: &str, qualifier: &str, config: &ProvisionedConfig) -> ProvisionedStatus {
        lock(&self.inner.provisioned.status).get(&(function.to_string(), qualifier.to_string())).cloned().unwrap_or(
            ProvisionedStatus {
                requested: config.requested,
                allocated: 0,
                status: "IN_PROGRESS",
                reason: None,
                last_modified_ms: config.last_modified_ms,
            },
        )
    }

    /// Brings one configuration's environments to the requested number.
    async fn reconcile_one(&self, function: &str, config: &ProvisionedConfig) -> ProvisionedStatus {
        let st = self.state(function);
        let mut status = ProvisionedStatus {
            requested: config.requested,
            allocated: 0,
            status: "IN_PROGRESS",
            reason: None,
            last_modified_ms: config.last_modified_ms,
        };
        let version = match Qualifier::parse(Some(&config.qualifier)) {
            Qualifier::Alias(a) => match self.alias(function, &st, &a).await {
                Ok(alias) => alias.function_version.clone(),
                Err(e) => {
                    status.status = "FAILED";
                    status.reason = Some(e.message);
                    return status;
                }
            },
            q => q.version().unwrap_or_default(),
        };
        if let Some(c) = &self.inner.config.cluster {
            // Provisioned environments live on the node that owns the version, where its
            // invocations are sent; the others give theirs up.
            let key = format!("{}/{function}/{version}", self.inner.config.scope.account);
            if !c.0.preferred(&key) {
                if let Some(pool) = lock(&st.pools).get(&version) {
                    pool.demote_provisioned(0);
                }
                // What the owner reports; this node does not measure it.
                status.allocated = config.requested;
                status.status = "READY";
                return status;
            }
        }
        let pool = match self.pool_for(function, &st, &version).await {
            Ok(p) => p,
            Err(e) => {
                status.status = "FAILED";
                status.reason = Some(e.message);
                return status;
            }
        };
        let want = config.requested as usize;
        let have = pool.provisioned_count();
        if have > want {
            pool.demote_provisioned(want);
        }
        let missing = want.saturating_sub(pool.provisioned_count());
        let mut starts = Vec::new();
        for _ in 0..missing {
            if !pool.reserve_slot() {
                break;
            }
            let (pool, bp, backend, sink) =
                (pool.clone(), pool.blueprint.clone(), self.inner.backend.clone(), self.inner.sink.clone());
            starts.push(tokio::spawn(async move {
                match Environment::start(bp, backend.as_ref(), sink, "provisioned-concurrency", false, true).await {
                    Ok(env) => {
                        pool.add_provisioned(env);
                        None
                    }
                    Err(start) => {
                        pool.forget();
                        Some(String::from_utf8_lossy(&start.failure.body).into_owned())
                    }
                }
            }));
        }
        for s in starts {
            if let Ok(Some(err)) = s.await {
                status.status = "FAILED";
                status.reason = Some(format!("An environment failed to initialise: {err}"));
            }
        }
        status.allocated = pool.provisioned_count().min(want) as u32;
        if status.status != "FAILED" && status.allocated as usize >= want {
            status.status = "READY";
        }
        status
    }
}

/// Starts the reconciler.
pub fn spawn(invoker: Invoker) {
    tokio::spawn(async move {
        loop {
            let configs = invoker.inner.store.run(|db| db.list_provisioned(None)).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read provisioned concurrency");
                Vec::new()
            });
            let mut seen = HashMap::new();
            for (function, config) in &configs {
                let status = invoker.reconcile_one(function, config).await;
                if status.status == "FAILED" {
                    tracing::warn!(%function, qualifier = %config.qualifier, reason = ?status.reason, "provisioned concurrency failed");
                }
                seen.insert((function.clone(), config.qualifier.clone()), status);
            }
            // Configurations removed: their environments become ordinary (reaped when idle).
            let functions: Vec<(String, Arc<crate::FunctionState>)> =
                lock(&invoker.inner.functions).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (name, st) in functions {
                let keep: HashMap<String, usize> = configs
                    .iter()
                    .filter(|(f, _)| *f == name)
                    .filter_map(|(_, c)| {
                        Qualifier::parse(Some(&c.qualifier)).version().map(|v| (v, c.requested as usize))
                    })
                    .collect();
                let aliased = configs
                    .iter()
                    .any(|(f, c)| *f == name && matches!(Qualifier::parse(Some(&c.qualifier)), Qualifier::Alias(_)));
                for (version, pool) in lock(&st.pools).iter() {
                    if !aliased && !keep.contains_key(version) && pool.provisioned_count() > 0 {
                        pool.demote_provisioned(0);
                    }
                }
            }
            *lock(&invoker.inner.provisioned.status) = seen;
            tokio::select! {
                _ = invoker.inner.provisioned.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    });
}
