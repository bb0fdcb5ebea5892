//! Usage and cost (`GET /_stratus/usage`) and the Prometheus metrics (`GET /metrics`).
//!
//! `/_stratus/usage?account=&from=&to=&by=function|version|day|trigger` sums the ledger over
//! `[from, to)` (default: month to date, UTC) and prices it with the account's price table:
//! each row at first-tier prices, each account's total with tiers and the free tier.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use model::LambdaError;
use model::ledger::{GroupBy, Usage, format_instant, month_start, parse_instant};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ApiState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    account: Option<String>,
    from: Option<String>,
    to: Option<String>,
    by: Option<String>,
}

fn now_us() -> i64 {
    model::logfmt::now_ms() * 1000
}

fn instant(name: &str, v: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match v {
        None | Some("") => Ok(default),
        Some(s) => parse_instant(s).ok_or_else(|| {
            ApiError(LambdaError::invalid_parameter(format!(
                "{name} must be a date (2026-12-01), an RFC 3339 time or Unix milliseconds, got {s:?}"
            )))
        }),
    }
}

fn usage_json(u: &Usage) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("requests".into(), json!(u.requests));
    m.insert("errors".into(), json!(u.errors));
    m.insert("throttles".into(), json!(u.throttles));
    m.insert("timeouts".into(), json!(u.timeouts));
    m.insert("cold_starts".into(), json!(u.cold_starts));
    m.insert("billed_ms".into(), json!(u.billed_ms));
    m.insert("gb_seconds".into(), json!(u.gb_seconds()));
    m
}

pub async fn usage(State(state): State<ApiState>, Query(q): Query<UsageQuery>) -> Result<Response, ApiError> {
    let now = now_us();
    let from = instant("from", q.from.as_deref(), month_start(now))?;
    let to = instant("to", q.to.as_deref(), now + 1)?;
    if from >= to {
        return Err(ApiError(LambdaError::invalid_parameter("from must be before to")));
    }
    let by = match q.by.as_deref() {
        None | Some("") => None,
        Some(s) => Some(GroupBy::parse(s).ok_or_else(|| {
            ApiError(LambdaError::invalid_parameter(format!(
                "by must be one of function, version, day, trigger, account; got {s:?}"
            )))
        })?),
    };
    let mut account = q.account.filter(|a| !a.is_empty());
    if !state.operator {
        // An account sees its own usage only; the default account's operator sees everyone's.
        account = Some(state.scope.account.clone());
    }
    if let Some(a) = &account
        && !model::names::is_account_id(a)
    {
        return Err(ApiError(LambdaError::invalid_parameter(format!("account must be 12 digits, got {a:?}"))));
    }
    let ledger = state.store.ledger.clone();
    let fail = |e: store::StoreError| ApiError(LambdaError::service(format!("cannot read the ledger: {e}")));
    let rows = match by {
        Some(g) if g != GroupBy::Account => ledger.usage(account.clone(), from, to, Some(g)).await.map_err(fail)?,
        _ => Vec::new(),
    };
    let totals = ledger.usage(account.clone(), from, to, None).await.map_err(fail)?;
    let mut by_account: BTreeMap<String, Vec<Usage>> = BTreeMap::new();
    for t in totals {
        by_account.entry(t.account.clone()).or_default().push(t);
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|u| {
            let cost = state.prices.for_account(&u.account).row_cost(u);
            let mut m = usage_json(u);
            m.insert("account".into(), json!(u.account));
            m.insert("key".into(), json!(u.key));
            m.insert("architecture".into(), json!(u.architecture));
            m.insert("cost_usd".into(), json!(cost.total_usd));
            Value::Object(m)
        })
        .collect();
    let accounts: Vec<Value> = by_account
        .iter()
        .map(|(account, per_arch)| {
            let mut sum = Usage::default();
            for u in per_arch {
                sum.add(u);
            }
            let prices = state.prices.for_account(account);
            let cost = prices.total_cost(per_arch);
            let mut m = usage_json(&sum);
            m.insert("account".into(), json!(account));
            m.insert(
                "cost".into(),
                json!({
                    "requests_usd": cost.requests_usd,
                    "duration_usd": cost.duration_usd,
                    "free_tier_usd": cost.free_tier_usd,
                    "total_usd": cost.total_usd,
                }),
            );
            m.insert("free_tier".into(), json!(prices.free_tier));
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({
        "from": format_instant(from),
        "to": format_instant(to),
        "by": q.by.unwrap_or_default(),
        "rows": rows,
        "accounts": accounts,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct LedgerQuery {
    request_id: Option<String>,
    account: Option<String>,
    limit: Option<usize>,
}

/// Ledger rows: those of one request id (oldest first), or the newest (`limit`, default 100).
pub async fn ledger(State(state): State<ApiState>, Query(q): Query<LedgerQuery>) -> Result<Response, ApiError> {
    let ledger = state.store.ledger.clone();
    let own = (!state.operator).then(|| state.scope.account.clone());
    let mut rows = match q.request_id {
        Some(id) => ledger.by_request(id).await,
        None => {
            let account = own.clone().or(q.account.filter(|a| !a.is_empty()));
            ledger.recent(account, q.limit.unwrap_or(100).clamp(1, 10_000)).await
        }
    }
    .map_err(|e| ApiError(LambdaError::service(format!("cannot read the ledger: {e}"))))?;
    if let Some(own) = own {
        rows.retain(|r| *r.account == *own);
    }
    // Each row with its GB-seconds (derived from memory and billed time, not stored).
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["gb_seconds"] = json!(r.gb_seconds());
            v
        })
        .collect();
    Ok(Json(json!({ "records": records })).into_response())
}
