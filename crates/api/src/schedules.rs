//! EventBridge Scheduler's API (rest-json, 2021-06-30), served beside Lambda's so boto3's
//! `scheduler` client and `aws scheduler` work with the same `--endpoint-url`: schedules and
//! schedule groups of the caller's account. The scheduler itself is `triggers::schedules`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use model::schedule::{FlexibleWindow, Schedule, Target};
use model::{ErrorCode, LambdaError};
use serde::Deserialize;
use serde_json::{Value, json};
use store::StoreError;
use store::schedules::DEFAULT_GROUP;
use triggers::schedules::{group_arn, schedule_arn};

use crate::error::ApiError;
use crate::{ApiState, read_body};

/// Now, in the API's seconds, and in the milliseconds ticks are counted in (the same instant).
fn now() -> (f64, i64) {
    let ms = model::logfmt::now_ms();
    (ms as f64 / 1000.0, ms)
}

fn now_secs() -> f64 {
    now().0
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError(LambdaError::new(ErrorCode::Validation, message))
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError(LambdaError::new(ErrorCode::ResourceNotFound, message))
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal("schedule store", e)
}

/// CreateSchedule's and UpdateSchedule's body.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleInput {
    action_after_completion: Option<String>,
    #[allow(dead_code)]
    client_token: Option<String>,
    description: Option<String>,
    end_date: Option<f64>,
    flexible_time_window: Option<FlexibleWindow>,
    group_name: Option<String>,
    kms_key_arn: Option<String>,
    schedule_expression: Option<String>,
    schedule_expression_timezone: Option<String>,
    start_date: Option<f64>,
    state: Option<String>,
    target: Option<Target>,
}

async fn input(body: Body) -> Result<ScheduleInput, ApiError> {
    let bytes = read_body(body, 512 * 1024, "CreateSchedule").await?;
    serde_json::from_slice(&bytes).map_err(|e| validation(format!("The request body is not a valid schedule: {e}")))
}

#[derive(Deserialize)]
pub struct GroupQuery {
    #[serde(rename = "groupName")]
    group_name: Option<String>,
}

impl ScheduleInput {
    /// The schedule it describes (`created` is kept across updates).
    fn schedule(self, name: String, created: f64, state: &ApiState) -> Result<Schedule, ApiError> {
        let missing = |m: &str| {
            validation(format!(
                "1 validation error detected: Value null at '{m}' failed to satisfy constraint: Member must not be null"
            ))
        };
        if self.kms_key_arn.is_some() {
            return Err(validation("KmsKeyArn is not supported: schedules are stored in the data directory"));
        }
        let s = Schedule {
            name,
            group: self.group_name.unwrap_or_else(|| DEFAULT_GROUP.to_string()),
            expression: self.schedule_expression.ok_or_else(|| missing("scheduleExpression"))?,
            timezone: self.schedule_expression_timezone,
            start_date: self.start_date,
            end_date: self.end_date,
            window: self.flexible_time_window.ok_or_else(|| missing("flexibleTimeWindow"))?,
            state: self.state.unwrap_or_else(|| "ENABLED".into()),
            action_after_completion: self.action_after_completion.unwrap_or_else(|| "NONE".into()),
            description: self.description,
            target: self.target.ok_or_else(|| missing("target"))?,
            creation_date: created,
            last_modification_date: now_secs(),
        };
        s.validate(state.scheduler.allow_seconds).map_err(validation)?;
        let target = model::FunctionRef::parse(&s.target.arn, model::NameUse::Reference)
            .map_err(|e| validation(format!("Invalid target: {}", e.message)))?;
        if target.account.as_deref().is_some_and(|a| a != state.scope.account) {
            return Err(validation("The target function must be in the schedule's account"));
        }
        Ok(s)
    }
}

/// The next tick of an enabled schedule from `now_ms` on, after its last fired one.
fn next_tick(s: &Schedule, now_ms: i64, last_fired: Option<i64>) -> Option<i64> {
    if s.state != "ENABLED" {
        return None;
    }
    let (expr, tz) = s.validate(true).ok()?;
    let after = (now_ms - 1).max(last_fired.unwrap_or(i64::MIN));
    s.next_tick(&expr, tz, after)
}

async fn require_group(state: &ApiState, group: &str) -> Result<(), ApiError> {
    let g = group.to_string();
    if state.store.run(move |db| db.group_exists(&g)).await.map_err(store_err)? {
        Ok(())
    } else {
        Err(not_found(format!("Schedule group {group} does not exist.")))
    }
}

pub async fn create_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (created, now_ms) = now();
    let s = input(body).await?.schedule(name, created, &state)?;
    require_group(&state, &s.group).await?;
    let next = next_tick(&s, now_ms, None);
    let arn = schedule_arn(&state.scope, &s.group, &s.name);
    let stored = s.clone();
    match state.store.run(move |db| db.create_schedule(&stored, next)).await {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError(LambdaError::new(
                ErrorCode::Conflict,
                format!("Schedule {} already exists.", s.name),
            )));
        }
        Err(e) => return Err(store_err(e)),
    }
    state.scheduler.changed();
    tracing::info!(schedule = %arn, expression = %s.expression, "schedule created");
    Ok(Json(json!({ "ScheduleArn": arn })))
}

pub async fn update_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let input = input(body).await?;
    let group = input.group_name.clone().unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let (g, n) = (group.clone(), name.clone());
    let Some(old) = state.store.run(move |db| db.get_schedule(&g, &n)).await.map_err(store_err)? else {
        return Err(not_found(format!("Schedule {name} does not exist.")));
    };
    let s = input.schedule(name, old.schedule.creation_date, &state)?;
    // A tick that was due and not yet fired stays due (it fires with the new settings).
    let now_ms = match old.next_ms {
        Some(due) if due <= model::logfmt::now_ms() => due,
        _ => model::logfmt::now_ms(),
    };
    let next = next_tick(&s, now_ms, old.last_fired_ms);
    let arn = schedule_arn(&state.scope, &s.group, &s.name);
    let stored = s.clone();
    match state.store.run(move |db| db.update_schedule(&stored, next)).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(not_found(format!("Schedule {} does not exist.", s.name))),
        Err(e) => return Err(store_err(e)),
    }
    state.scheduler.changed();
    Ok(Json(json!({ "ScheduleArn": arn })))
}

fn schedule_json(state: &ApiState, s: &Schedule) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["Arn"] = json!(schedule_arn(&state.scope, &s.group, &s.name));
    v
}

pub async fn get_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> Result<Json<Value>, ApiError> {
    let group = q.group_name.unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let n = name.clone();
    match state.store.run(move |db| db.get_schedule(&group, &n)).await.map_err(store_err)? {
        Some(st) => Ok(Json(schedule_json(&state, &st.schedule))),
        None => Err(not_found(format!("Schedule {name} does not exist."))),
    }
}

pub async fn delete_schedule(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> Result<Json<Value>, ApiError> {
    let group = q.group_name.unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let n = name.clone();
    if !state.store.run(move |db| db.delete_schedule(&group, &n)).await.map_err(store_err)? {
        return Err(not_found(format!("Schedule {name} does not exist.")));
    }
    state.scheduler.changed();
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "ScheduleGroup")]
    group: Option<String>,
    #[serde(rename = "NamePrefix")]
    prefix: Option<String>,
    #[serde(rename = "State")]
    state: Option<String>,
    #[serde(rename = "NextToken")]
    next_token: Option<String>,
    #[serde(rename = "MaxResults")]
    max_results: Option<usize>,
}

pub async fn list_schedules(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.max_results.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(validation("MaxResults must be between 1 and 100"));
    }
    if let Some(s) = &q.state
        && s != "ENABLED"
        && s != "DISABLED"
    {
        return Err(validation(format!("Invalid State {s}: ENABLED or DISABLED")));
    }
    let mut cursor = q.next_token.clone();
    let mut page = Vec::new();
    let mut more = false;
    // Read in batches until the page is full, filtering by state.
    'read: loop {
        let (g, p, c) = (q.group.clone(), q.prefix.clone().unwrap_or_default(), cursor.clone());
        let batch = state
            .store
            .run(move |db| db.list_schedules(g.as_deref(), &p, c.as_deref(), 500))
            .await
            .map_err(store_err)?;
        let done = batch.len() < 500;
        for st in batch {
            cursor = Some(format!("{}/{}", st.schedule.group, st.schedule.name));
            if q.state.as_deref().is_some_and(|want| want != st.schedule.state) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break 'read;
            }
            page.push(st.schedule);
        }
        if done {
            break;
        }
    }
    let token = more.then(|| page.last().map(|s| format!("{}/{}", s.group, s.name))).flatten();
    let summaries: Vec<Value> = page
        .iter()
        .map(|s| {
            json!({
                "Arn": schedule_arn(&state.scope, &s.group, &s.name),
                "Name": s.name,
                "GroupName": s.group,
                "State": s.state,
                "CreationDate": s.creation_date,
                "LastModificationDate": s.last_modification_date,
                "Target": { "Arn": s.target.arn },
            })
        })
        .collect();
    let mut out = json!({ "Schedules": summaries });
    if let Some(t) = token {
        out["NextToken"] = json!(t);
    }
    Ok(Json(out))
}

fn group_json(state: &ApiState, name: &str, created_ms: Option<i64>) -> Value {
    let created = created_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
    json!({
        "Arn": group_arn(&state.scope, name),
        "Name": name,
        "State": "ACTIVE",
        "CreationDate": created,
        "LastModificationDate": created,
    })
}

pub async fn create_group(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(validation(format!(
            "Invalid schedule group name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let n = name.clone();
    match state.store.run(move |db| db.create_group(&n, model::logfmt::now_ms())).await {
        Ok(()) => Ok(Json(json!({ "ScheduleGroupArn": group_arn(&state.scope, &name) }))),
        Err(StoreError::AlreadyExists) => {
            Err(ApiError(LambdaError::new(ErrorCode::Conflict, format!("Schedule group {name} already exists."))))
        }
        Err(e) => Err(store_err(e)),
    }
}

pub async fn get_group(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let groups = state.store.run(|db| db.list_groups()).await.map_err(store_err)?;
    match groups.into_iter().find(|(g, _)| *g == name) {
        Some((g, created)) => Ok(Json(group_json(&state, &g, created))),
        None => Err(not_found(format!("Schedule group {name} does not exist."))),
    }
}

pub async fn delete_group(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    if name == DEFAULT_GROUP {
        return Err(validation("The default schedule group cannot be deleted."));
    }
    let n = name.clone();
    if !state.store.run(move |db| db.delete_group(&n)).await.map_err(store_err)? {
        return Err(not_found(format!("Schedule group {name} does not exist.")));
    }
    state.scheduler.changed();
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct GroupListQuery {
    #[serde(rename = "NamePrefix")]
    prefix: Option<String>,
}

pub async fn list_groups(
    State(state): State<ApiState>,
    Query(q): Query<GroupListQuery>,
) -> Result<Json<Value>, ApiError> {
    let groups = state.store.run(|db| db.list_groups()).await.map_err(store_err)?;
    let prefix = q.prefix.unwrap_or_default();
    let list: Vec<Value> = groups
        .iter()
        .filter(|(g, _)| g.starts_with(&prefix))
        .map(|(g, created)| group_json(&state, g, *created))
        .collect();
    Ok(Json(json!({ "ScheduleGroups": list })))
}
