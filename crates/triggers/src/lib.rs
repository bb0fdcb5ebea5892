//! Triggers: what turns an outside event into an invocation: the HTTP front (function URLs
//! and HTTP routes), object notifications, schedules, and event source mappings (pollers of
//! NATS, Redis, PostgreSQL, RabbitMQ and MQTT).
//!
//! Every trigger invokes through `invoke::Invoker`, like the API; this crate knows the event
//! shapes AWS sends functions (API Gateway payloads, S3 records, batches of stream and queue
//! records), never the control plane's wire shapes.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod esm;
pub mod http;
pub mod objects;
pub mod schedules;
