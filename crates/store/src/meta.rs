//! The metadata interface: what the rest of Stratus may ask of an account's metadata,
//! whichever database holds it. One trait per aggregate; [`Meta`] is all of them, and
//! [`crate::Store::run`] hands a `&mut dyn Meta` to its caller, so nothing above this crate
//! knows which implementation runs.
//!
//! Two implementations pass the same tests (`crate::conformance`):
//! - SQLite ([`crate::Db`]): one database file per account (the account is the file);
//! - PostgreSQL ([`crate::pg::PgDb`]): one database for the cluster, the account a key in
//!   every table and every statement, so no query reads another account's rows.
//!
//! Every method is synchronous and runs on a blocking thread ([`crate::Store::run`]).

use std::collections::{BTreeMap, HashSet};

use model::FunctionConfig;
use model::esm::Mapping;
use model::layers::LayerVersion;
use model::routes::RouteConfig;
use model::schedule::Schedule;
use model::urls::UrlConfig;
use model::versions::{AliasConfig, EventInvokeConfig, ProvisionedConfig};
use serde_json::Value;

use crate::StoreError;
use crate::policies::PolicyChange;
use crate::schedules::{Advance, Fired, StoredSchedule};

/// A change applied to `$LATEST` inside its transaction (see [`Functions::update_latest`]).
pub type Change<'a> = &'a mut dyn FnMut(&mut FunctionConfig) -> Result<(), StoreError>;
/// A check of `$LATEST` before it is published (see [`Functions::publish_version`]).
pub type Check<'a> = &'a mut dyn FnMut(&FunctionConfig) -> Result<(), StoreError>;

/// Functions, their versions, aliases and per-qualifier settings.
pub trait Functions {
    /// Creates a function with its `$LATEST` configuration.
    fn create_function(&mut self, config: &FunctionConfig, tags: &BTreeMap<String, String>) -> Result<(), StoreError>;
    /// The configuration of one version of a function.
    fn get_version(&self, name: &str, version: &str) -> Result<Option<FunctionConfig>, StoreError>;
    /// `$LATEST` configurations in name order, starting after `after`.
    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>, StoreError>;
    /// Changes `$LATEST` in one transaction. `expected_revision`, if given, must match.
    fn update_latest(
        &mut self,
        name: &str,
        expected_revision: Option<&str>,
        change: Change<'_>,
    ) -> Result<FunctionConfig, StoreError>;
    /// Deletes a function, its versions, aliases, settings and queued events. False if it
    /// did not exist.
    fn delete_function(&mut self, name: &str) -> Result<bool, StoreError>;
    /// Publishes `$LATEST` as a new version, unless it is unchanged since the last version
    /// (then that version is returned, as Lambda does). `check` sees `$LATEST` first and may
    /// refuse (code hash and revision preconditions).
    fn publish_version(
        &mut self,
        name: &str,
        description: Option<&str>,
        now_ms: i64,
        check: Check<'_>,
    ) -> Result<FunctionConfig, StoreError>;
    /// Every version of a function: `$LATEST` first, then by number.
    fn list_versions(&self, name: &str) -> Result<Vec<FunctionConfig>, StoreError>;
    /// Deletes one published version (refused while an alias points to it).
    fn delete_version(&mut self, name: &str, version: &str) -> Result<bool, StoreError>;
    fn get_alias(&self, function: &str, alias: &str) -> Result<Option<AliasConfig>, StoreError>;
    fn list_aliases(&self, function: &str) -> Result<Vec<AliasConfig>, StoreError>;
    /// Creates (`create`) or replaces an alias. Versions it names must exist.
    fn put_alias(&mut self, function: &str, alias: &AliasConfig, create: bool) -> Result<(), StoreError>;
    fn delete_alias(&mut self, function: &str, alias: &str) -> Result<bool, StoreError>;
    /// `None` if there is no such function, else its reservation (itself optional).
    fn reserved_concurrency(&self, function: &str) -> Result<Option<Option<u32>>, StoreError>;
    /// Sets (or clears) a function's reserved concurrency. False if there is no such function.
    fn set_reserved_concurrency(&mut self, function: &str, value: Option<u32>) -> Result<bool, StoreError>;
    /// Reserved concurrency of every function that has one.
    fn all_reserved(&self) -> Result<Vec<(String, u32)>, StoreError>;
    fn get_event_invoke_config(&self, function: &str, qualifier: &str)
    -> Result<Option<EventInvokeConfig>, StoreError>;
    fn list_event_invoke_configs(&self, function: &str) -> Result<Vec<(String, EventInvokeConfig)>, StoreError>;
    fn put_event_invoke_config(
        &mut self,
        function: &str,
        qualifier: &str,
        config: &EventInvokeConfig,
    ) -> Result<(), StoreError>;
    fn delete_event_invoke_config(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError>;
    fn put_provisioned(&mut self, function: &str, config: &ProvisionedConfig) -> Result<(), StoreError>;
    fn delete_provisioned(&mut self, function: &str, qualifier: &str) -> Result<bool, StoreError>;
    /// Provisioned configurations of one function, or of all (`None`).
    fn list_provisioned(&self, function: Option<&str>) -> Result<Vec<(String, ProvisionedConfig)>, StoreError>;
    fn tags(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, StoreError>;
    /// Replaces a function's tags. False if the function does not exist.
    fn set_tags(&mut self, name: &str, tags: &BTreeMap<String, String>) -> Result<bool, StoreError>;
    /// Number of functions and the total size of their packages.
    fn usage(&self) -> Result<(u64, u64), StoreError>;
    /// Code packages still referenced: by some function version (as its code or one of its
    /// layers) or by a layer version.
    fn referenced_code(&self) -> Result<HashSet<String>, StoreError>;
    /// The distinct lists of layers (package SHA-256s, in order) function versions use.
    fn referenced_layer_sets(&self) -> Result<Vec<Vec<String>>, StoreError>;
}

/// What the async queue's dispatcher asks besides its writer ([`crate::QueueWriter`]).
pub trait Queue {
    /// The earliest time any queued event is due.
    fn next_due(&self) -> Result<Option<i64>, StoreError>;
    /// Makes every event leased by this process's previous run due now (at start-up: the
    /// holder is gone). In a cluster, only this node's own earlier leases.
    fn release_leases(&mut self, now_ms: i64) -> Result<usize, StoreError>;
    /// How many events are queued (for metrics and tests).
    fn queued_events(&self) -> Result<u64, StoreError>;
}

/// Layers and their versions (numbers are never reused).
pub trait Layers {
    fn publish_layer_version(&mut self, layer: LayerVersion) -> Result<LayerVersion, StoreError>;
    fn get_layer_version(&self, name: &str, version: u64) -> Result<Option<LayerVersion>, StoreError>;
    /// Versions of one layer, newest first, below `before`, matching the filters.
    fn list_layer_versions(
        &self,
        name: &str,
        runtime: Option<&str>,
        architecture: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError>;
    /// The newest matching version of each layer, in name order after `after`.
    fn list_layers(
        &self,
        runtime: Option<&str>,
        architecture: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LayerVersion>, StoreError>;
    fn delete_layer_version(&mut self, name: &str, version: u64) -> Result<bool, StoreError>;
}

/// Function URLs (one per function or alias).
pub trait Urls {
    fn create_url(&mut self, c: &UrlConfig) -> Result<(), StoreError>;
    fn get_url(&self, function: &str, qualifier: Option<&str>) -> Result<Option<UrlConfig>, StoreError>;
    fn url_by_id(&self, url_id: &str) -> Result<Option<UrlConfig>, StoreError>;
    fn put_url(&mut self, c: &UrlConfig) -> Result<(), StoreError>;
    fn delete_url(&mut self, function: &str, qualifier: Option<&str>) -> Result<bool, StoreError>;
    fn list_urls(&self, function: &str, after: Option<&str>, limit: usize) -> Result<Vec<UrlConfig>, StoreError>;
}

/// HTTP routes of the HTTP front.
pub trait Routes {
    /// Creates or replaces the route of `r.route_key`.
    fn put_route(&mut self, r: &RouteConfig) -> Result<(), StoreError>;
    fn list_routes(&self) -> Result<Vec<RouteConfig>, StoreError>;
    fn delete_route(&mut self, route_key: &str) -> Result<bool, StoreError>;
}

/// Resource-based policies of functions (AddPermission / RemovePermission).
pub trait Policies {
    /// A policy and its revision id.
    fn get_policy(&self, function: &str, qualifier: Option<&str>) -> Result<Option<(Value, String)>, StoreError>;
    fn add_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        statement: Value,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError>;
    fn remove_permission(
        &mut self,
        function: &str,
        qualifier: Option<&str>,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<PolicyChange, StoreError>;
}

/// EventBridge Scheduler's schedules and groups.
pub trait Schedules {
    fn group_exists(&self, group: &str) -> Result<bool, StoreError>;
    /// Groups with their creation time (the default group first).
    fn list_groups(&self) -> Result<Vec<(String, Option<i64>)>, StoreError>;
    fn create_group(&mut self, group: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Deletes a group and its schedules.
    fn delete_group(&mut self, group: &str) -> Result<bool, StoreError>;
    fn create_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError>;
    /// Replaces a schedule's configuration and next tick (its last fired tick stays).
    fn update_schedule(&mut self, s: &Schedule, next_ms: Option<i64>) -> Result<(), StoreError>;
    fn get_schedule(&self, group: &str, name: &str) -> Result<Option<StoredSchedule>, StoreError>;
    fn delete_schedule(&mut self, group: &str, name: &str) -> Result<bool, StoreError>;
    /// Schedules ordered by group and name, after `after` (`group/name`), at most `limit`.
    fn list_schedules(
        &self,
        group: Option<&str>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, StoreError>;
    /// The earliest next tick of any schedule.
    fn next_schedule_due(&self) -> Result<Option<i64>, StoreError>;
    /// Schedules whose next tick is at or before `now_ms`.
    fn due_schedules(&self, now_ms: i64, limit: usize) -> Result<Vec<StoredSchedule>, StoreError>;
    /// Applies the moves of several schedules in one transaction: each moves from tick
    /// `expected_next` to `new_next`, records `fired` as its last fired tick and queues its
    /// event, all or nothing (or is deleted, for ActionAfterCompletion DELETE after its last
    /// tick). A schedule that changed since it was read (or that another scheduler moved
    /// first) is left alone (`Fired::Stale`): each tick is queued once.
    fn advance_schedules(&mut self, moves: &[Advance]) -> Result<Vec<Fired>, StoreError>;
}

/// Event source mappings and their checkpoints.
pub trait Mappings {
    fn create_mapping(&mut self, m: &Mapping, now_ms: i64) -> Result<(), StoreError>;
    fn update_mapping(&mut self, m: &Mapping) -> Result<(), StoreError>;
    fn get_mapping(&self, uuid: &str) -> Result<Option<Mapping>, StoreError>;
    /// Deletes a mapping and its checkpoints.
    fn delete_mapping(&mut self, uuid: &str) -> Result<bool, StoreError>;
    /// Mappings in creation order (then by UUID), of one function if given, after `after`
    /// (a UUID), at most `limit`.
    fn list_mappings(
        &self,
        function: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Mapping>, StoreError>;
    /// A partition's checkpoint.
    fn checkpoint(&self, uuid: &str, partition: &str) -> Result<Option<String>, StoreError>;
    /// Moves a partition's checkpoint (only if the mapping still exists and, in a cluster,
    /// only while `fence` is the mapping's current lease token: a poller that lost its lease
    /// cannot move it). Returns false when the write was refused for either reason.
    fn set_checkpoint(
        &mut self,
        uuid: &str,
        partition: &str,
        position: &str,
        now_ms: i64,
        fence: Option<i64>,
    ) -> Result<bool, StoreError>;
}

/// Everything an account's metadata offers.
pub trait Meta: Functions + Queue + Layers + Urls + Routes + Policies + Schedules + Mappings + Send {}

impl<T: Functions + Queue + Layers + Urls + Routes + Policies + Schedules + Mappings + Send> Meta for T {}
