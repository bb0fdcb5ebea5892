//! Stratus's domain model: function names and ARNs, configuration and its validation, runtime
//! identifiers, invocation requests and results, the platform's log-line formats, and the
//! errors callers see.
//!
//! Pure data and rules: no I/O, no HTTP. The `api` crate maps these to Lambda's JSON wire
//! shapes; everything else speaks these types.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod error;
pub mod esm;
pub mod filter;
pub mod invoke;
pub mod layers;
pub mod ledger;
pub mod logfmt;
pub mod names;
pub mod objects;
pub mod policy;
pub mod pricing;
pub mod routes;
pub mod runtime;
pub mod schedule;
pub mod trace;
pub mod urls;
pub mod versions;

pub use config::{ConfigInput, FunctionConfig, LATEST};
pub use error::{ErrorCode, LambdaError, ThrottleReason};
pub use names::{FunctionRef, NameUse, Scope};
