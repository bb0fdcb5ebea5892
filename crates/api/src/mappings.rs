//! Event source mappings: Create/Get/Update/Delete/ListEventSourceMappings. The pollers
//! themselves are `triggers::esm`; sources are self-managed servers named by
//! `SelfManagedEventSource.Endpoints` and `Topics`/`Queues` (see `model::esm`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use model::esm::{Mapping, Source, SourceKind, StartingPosition};
use model::{FunctionRef, LambdaError};
use serde::Deserialize;
use serde_json::{Value, json};
use store::StoreError;

use crate::error::ApiError;
use crate::functions::{function_ref, json_response};
use crate::{ApiState, read_body, wire};

type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    pattern: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilterCriteria {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Destination {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfig {
    on_failure: Option<Destination>,
    on_success: Option<Destination>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SelfManaged {
    #[serde(default)]
    endpoints: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsumerGroup {
    consumer_group_id: Option<String>,
}

/// CreateEventSourceMapping's and UpdateEventSourceMapping's body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MappingIn {
    function_name: Option<String>,
    event_source_arn: Option<String>,
    enabled: Option<bool>,
    batch_size: Option<i64>,
    maximum_batching_window_in_seconds: Option<i64>,
    parallelization_factor: Option<i64>,
    starting_position: Option<String>,
    starting_position_timestamp: Option<f64>,
    destination_config: Option<DestinationConfig>,
    maximum_record_age_in_seconds: Option<i64>,
    bisect_batch_on_function_error: Option<bool>,
    maximum_retry_attempts: Option<i64>,
    tumbling_window_in_seconds: Option<i64>,
    topics: Option<Vec<String>>,
    queues: Option<Vec<String>>,
    self_managed_event_source: Option<SelfManaged>,
    function_response_types: Option<Vec<String>>,
    filter_criteria: Option<FilterCriteria>,
    self_managed_kafka_event_source_config: Option<ConsumerGroup>,
    #[serde(rename = "KMSKeyArn")]
    kms_key_arn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListQuery {
    function_name: Option<String>,
    event_source_arn: Option<String>,
    marker: Option<String>,
    max_items: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError(LambdaError::invalid_parameter(message))
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal("event source mapping store", e)
}

fn not_found() -> ApiError {
    ApiError(LambdaError::not_found("The resource you requested does not exist."))
}

fn range(v: Option<i64>, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match v {
        Some(n) if n < lo || n > hi => Err(invalid(format!("{name} must be between {lo} and {hi} (got {n})"))),
        other => Ok(other),
    }
}

/// The function a request names, which must exist (with its alias or version).
async fn target(state: &ApiState, raw: &str) -> Result<FunctionRef, ApiError> {
    let r = function_ref(state, raw, None)?;
    let (f, q) = (r.name.clone(), r.qualifier.clone());
    let exists = state
        .store
        .run(move |db| {
            Ok(db.get_version(&f, model::LATEST)?.is_some()
                && match q.as_deref() {
                    None | Some(model::LATEST) => true,
                    Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => db.get_version(&f, v)?.is_some(),
                    Some(a) => db.get_alias(&f, a)?.is_some(),
                })
        })
        .await
        .map_err(store_err)?;
    if !exists {
        return Err(ApiError(LambdaError::not_found(format!(
            "Function not found: {}",
            match &r.qualifier {
                Some(q) => state.scope.qualified_arn(&r.name, q),
                None => state.scope.function_arn(&r.name),
            }
        ))));
    }
    Ok(r)
}

impl MappingIn {
    /// The source a create names.
    fn source(&self) -> Result<Source, ApiError> {
        if let Some(arn) = &self.event_source_arn {
            return Err(invalid(format!(
                "Stratus reads self-managed sources; {arn} cannot be read. Name the server in SelfManagedEventSource.Endpoints (KAFKA_BOOTSTRAP_SERVERS, NATS_SERVERS, REDIS_SERVERS, POSTGRES_SERVERS, RABBITMQ_BROKERS or MQTT_BROKERS) and the stream, table, topic or queue in Topics or Queues"
            )));
        }
        let Some(sm) = &self.self_managed_event_source else {
            return Err(invalid("An event source is required: SelfManagedEventSource.Endpoints names the server"));
        };
        let mut entries = sm.endpoints.iter();
        let (Some((key, endpoints)), None) = (entries.next(), entries.next()) else {
            return Err(invalid("SelfManagedEventSource.Endpoints must hold exactly one kind of server"));
        };
        let Some(kind) = SourceKind::from_endpoints_key(key) else {
            return Err(invalid(format!(
                "Unknown endpoint type {key}: use KAFKA_BOOTSTRAP_SERVERS, NATS_SERVERS, REDIS_SERVERS, POSTGRES_SERVERS, RABBITMQ_BROKERS or MQTT_BROKERS"
            )));
        };
        let names = if kind == SourceKind::RabbitMq {
            if self.topics.is_some() {
                return Err(invalid("A RabbitMQ source names its queue in Queues, not Topics"));
            }
            self.queues.as_deref().unwrap_or_default()
        } else {
            if self.queues.is_some() {
                return Err(invalid(format!("{key} sources name what to read in Topics, not Queues")));
            }
            self.topics.as_deref().unwrap_or_default()
        };
        let [name] = names else {
            return Err(invalid(if kind == SourceKind::RabbitMq {
                "Queues must name exactly one queue"
            } else {
                "Topics must name exactly one stream, table or topic"
            }));
        };
        Ok(Source { kind, endpoints: endpoints.clone(), name: name.clone() })
    }

    /// Applies the settings this request carries to `m`.
    fn apply(self, m: &mut Mapping) -> Result<(), ApiError> {
        if self.kms_key_arn.is_some() {
            return Err(invalid("KMSKeyArn is not supported: mappings are stored in the data directory"));
        }
        if self.tumbling_window_in_seconds.is_some_and(|t| t != 0) {
            return Err(invalid("TumblingWindowInSeconds is not supported"));
        }
        if let Some(e) = self.enabled {
            m.enabled = e;
        }
        if let Some(b) = range(self.batch_size, "BatchSize", 1, i64::from(model::esm::MAX_BATCH))? {
            m.batch_size = b as u32;
        }
        if let Some(w) = range(
            self.maximum_batching_window_in_seconds,
            "MaximumBatchingWindowInSeconds",
            0,
            i64::from(model::esm::MAX_WINDOW_S),
        )? {
            m.batching_window_s = w as u32;
        }
        if let Some(p) = range(self.parallelization_factor, "ParallelizationFactor", 1, 10)? {
            m.parallelization = p as u32;
        }
        if let Some(r) = range(self.maximum_retry_attempts, "MaximumRetryAttempts", -1, model::esm::MAX_RETRIES)? {
            m.max_retries = r;
        }
        if let Some(a) = self.maximum_record_age_in_seconds {
            m.max_record_age_s = a;
        }
        if let Some(b) = self.bisect_batch_on_function_error {
            m.bisect = b;
        }
        if let Some(types) = self.function_response_types {
            if let Some(bad) = types.iter().find(|t| *t != "ReportBatchItemFailures") {
                return Err(invalid(format!(
                    "Unsupported FunctionResponseTypes value {bad}: only ReportBatchItemFailures"
                )));
            }
            m.report_failures = !types.is_empty();
        }
        if let Some(d) = self.destination_config {
            if d.on_success.and_then(|s| s.destination).is_some() {
                return Err(invalid(
                    "Unsupported DestinationConfig parameter for a stream or queue mapping: OnSuccess",
                ));
            }
            m.on_failure = d.on_failure.and_then(|f| f.destination).filter(|d| !d.is_empty());
        }
        if let Some(f) = self.filter_criteria {
            m.filters = f
                .filters
                .into_iter()
                .map(|f| f.pattern.ok_or_else(|| invalid("Each filter needs a Pattern")))
                .collect::<Result<_, _>>()?;
        }
        if m.report_failures && !m.source.kind.is_stream() {
            return Err(invalid(
                "ReportBatchItemFailures applies to streams (Kafka, NATS, Redis, PostgreSQL): a queue's batch succeeds or fails whole",
            ));
        }
        m.validate().map_err(invalid)?;
        Ok(())
    }
}

/// EventSourceMappingConfiguration.
fn configuration(state: &ApiState, m: &Mapping, state_override: Option<&str>) -> Value {
    let status = state.pollers.status(&m.uuid);
    let st = state_override.unwrap_or_else(|| match (&status, m.enabled) {
        (Some(s), true) => s.state,
        _ => m.state(),
    });
    let function_arn = match &m.qualifier {
        Some(q) => state.scope.qualified_arn(&m.function, q),
        None => state.scope.function_arn(&m.function),
    };
    let mut v = json!({
        "UUID": m.uuid,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.batching_window_s,
        "FunctionArn": function_arn,
        "LastModified": m.last_modified,
        "LastProcessingResult": status.map(|s| s.last_result).unwrap_or_else(|| "No records processed".into()),
        "State": st,
        "StateTransitionReason": "User action",
        "SelfManagedEventSource": {"Endpoints": {m.source.kind.endpoints_key(): m.source.endpoints}},
        "EventSourceMappingArn": format!("arn:aws:lambda:{}:{}:event-source-mapping:{}", state.scope.region, state.scope.account, m.uuid),
        "FunctionResponseTypes": if m.report_failures { vec!["ReportBatchItemFailures"] } else { vec![] },
        "DestinationConfig": {"OnFailure": m.on_failure.as_ref().map(|d| json!({"Destination": d})).unwrap_or_else(|| json!({}))},
    });
    if m.source.kind == SourceKind::RabbitMq {
        v["Queues"] = json!([m.source.name]);
    } else {
        v["Topics"] = json!([m.source.name]);
    }
    if m.source.kind.is_stream() {
        v["StartingPosition"] = json!(m.starting_position.map(StartingPosition::as_str));
        if let Some(t) = m.starting_timestamp {
            v["StartingPositionTimestamp"] = json!(t);
        }
        v["TumblingWindowInSeconds"] = json!(0);
    }
    // Stratus retries every kind of source the way Lambda retries streams.
    v["ParallelizationFactor"] = json!(m.parallelization);
    v["MaximumRecordAgeInSeconds"] = json!(m.max_record_age_s);
    v["BisectBatchOnFunctionError"] = json!(m.bisect);
    v["MaximumRetryAttempts"] = json!(m.max_retries);
    if !m.filters.is_empty() {
        v["FilterCriteria"] = json!({"Filters": m.filters.iter().map(|p| json!({"Pattern": p})).collect::<Vec<_>>()});
    }
    if let Some(g) = &m.consumer_group {
        v["SelfManagedKafkaEventSourceConfig"] = json!({"ConsumerGroupId": g});
    }
    v
}

fn now_secs() -> f64 {
    model::logfmt::now_ms() as f64 / 1000.0
}

pub async fn create(State(state): State<ApiState>, body: Body) -> ApiResult {
    let bytes = read_body(body, 256 * 1024, "CreateEventSourceMapping").await?;
    let input: MappingIn = wire::parse_body(&bytes)?;
    let Some(raw) = input.function_name.clone() else {
        return Err(LambdaError::validation("null", "functionName", "Member must not be null").into());
    };
    let source = input.source()?;
    let starting_position = match input.starting_position.as_deref() {
        None => None,
        Some(s) => Some(StartingPosition::parse(s).ok_or_else(|| {
            invalid(format!("Unsupported starting position {s}: TRIM_HORIZON, LATEST or AT_TIMESTAMP"))
        })?),
    };
    let f = target(&state, &raw).await?;
    let mut m = Mapping::new(uuid::Uuid::new_v4().to_string(), f.name, source, starting_position);
    m.qualifier = f.qualifier;
    m.starting_timestamp = input.starting_position_timestamp;
    m.last_modified = now_secs();
    m.consumer_group = input
        .self_managed_kafka_event_source_config
        .as_ref()
        .and_then(|c| c.consumer_group_id.clone())
        .filter(|_| matches!(m.source.kind, SourceKind::Redis | SourceKind::Kafka));
    input.apply(&mut m)?;
    check_destination(&state, &m).await?;
    let stored = m.clone();
    state.store.run(move |db| db.create_mapping(&stored, model::logfmt::now_ms())).await.map_err(store_err)?;
    state.pollers.changed(&m);
    tracing::info!(mapping = %m.uuid, function = %m.function, source = %m.source.name, kind = ?m.source.kind, "event source mapping created");
    Ok(json_response(StatusCode::ACCEPTED, configuration(&state, &m, Some("Creating"))))
}

/// The on-failure destination must be a function of the account.
async fn check_destination(state: &ApiState, m: &Mapping) -> Result<(), ApiError> {
    if let Some(d) = &m.on_failure {
        let r = FunctionRef::parse(d, model::NameUse::Reference)?;
        if r.account.as_deref().is_some_and(|a| a != state.scope.account) {
            return Err(invalid("The on-failure destination must be a function of the mapping's account"));
        }
        target(state, d).await.map_err(|_| invalid(format!("The on-failure destination {d} does not exist")))?;
    }
    Ok(())
}

async fn load(state: &ApiState, uuid: String) -> Result<Mapping, ApiError> {
    state.store.run(move |db| db.get_mapping(&uuid)).await.map_err(store_err)?.ok_or_else(not_found)
}

pub async fn get(State(state): State<ApiState>, Path(uuid): Path<String>) -> ApiResult {
    let m = load(&state, uuid).await?;
    Ok(json_response(StatusCode::OK, configuration(&state, &m, None)))
}

pub async fn update(State(state): State<ApiState>, Path(uuid): Path<String>, body: Body) -> ApiResult {
    let bytes = read_body(body, 256 * 1024, "UpdateEventSourceMapping").await?;
    let input: MappingIn = wire::parse_body(&bytes)?;
    let mut m = load(&state, uuid).await?;
    if input.starting_position.is_some()
        || input.self_managed_event_source.is_some()
        || input.topics.is_some()
        || input.queues.is_some()
        || input.event_source_arn.is_some()
    {
        return Err(invalid("A mapping's source and starting position cannot be changed: create a new mapping"));
    }
    if let Some(raw) = input.function_name.clone() {
        let f = target(&state, &raw).await?;
        m.function = f.name;
        m.qualifier = f.qualifier;
    }
    input.apply(&mut m)?;
    check_destination(&state, &m).await?;
    m.last_modified = now_secs();
    let stored = m.clone();
    state.store.run(move |db| db.update_mapping(&stored)).await.map_err(|e| match e {
        StoreError::NotFound => not_found(),
        e => store_err(e),
    })?;
    state.pollers.changed(&m);
    tracing::info!(mapping = %m.uuid, enabled = m.enabled, "event source mapping updated");
    let shown = if m.enabled { "Updating" } else { "Disabling" };
    Ok(json_response(StatusCode::ACCEPTED, configuration(&state, &m, Some(shown))))
}

pub async fn delete(State(state): State<ApiState>, Path(uuid): Path<String>) -> ApiResult {
    let m = load(&state, uuid).await?;
    let id = m.uuid.clone();
    if !state.store.run(move |db| db.delete_mapping(&id)).await.map_err(store_err)? {
        return Err(not_found());
    }
    state.pollers.deleted(&m);
    tracing::info!(mapping = %m.uuid, "event source mapping deleted");
    Ok(json_response(StatusCode::ACCEPTED, configuration(&state, &m, Some("Deleting"))))
}

pub async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult {
    let max = match q.max_items.as_deref() {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n @ 1..=10_000) => n,
            _ => {
                return Err(LambdaError::validation(s, "maxItems", "Member must have value between 1 and 10000").into());
            }
        },
    };
    let function = match q.function_name.as_deref() {
        Some(raw) => Some(function_ref(&state, raw, None)?.name),
        None => None,
    };
    let (after, arn) = (q.marker.clone(), q.event_source_arn.clone());
    let scope = state.scope.clone();
    let page = state
        .store
        .run(move |db| match arn {
            None => db.list_mappings(function.as_deref(), after.as_deref(), max + 1),
            // Self-managed sources have no ARN of their own; records name them `arn:stratus:…`.
            // Filtered before paging, so pages stay full.
            Some(arn) => {
                let all = db.list_mappings(function.as_deref(), None, usize::MAX >> 1)?;
                let mut matching = all.into_iter().filter(|m| m.source.arn(&scope) == arn).peekable();
                if let Some(a) = &after {
                    while matching.next_if(|m| &m.uuid != a).is_some() {}
                    matching.next();
                }
                Ok(matching.take(max + 1).collect())
            }
        })
        .await
        .map_err(store_err)?;
    let mut page = page;
    let next = (page.len() > max).then(|| page[max - 1].uuid.clone());
    page.truncate(max);
    let mut v = json!({"EventSourceMappings": page.iter().map(|m| configuration(&state, m, None)).collect::<Vec<_>>()});
    if let Some(n) = next {
        v["NextMarker"] = json!(n);
    }
    Ok(json_response(StatusCode::OK, v))
}
