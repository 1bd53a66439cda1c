//! The pure CLS domain: resource and status types with their wire (serde) shapes, request
//! validation, the status aggregation decision table, the reconcile policy and the event
//! envelopes.
//!
//! Invariant: nothing here performs I/O or depends on an async runtime, a database driver, an
//! RPC framework or an HTTP server. Every decision the services make is a pure function in this
//! crate, so it is unit-tested without a database. Time ("now"), ids and configuration are
//! passed in as arguments; nothing reads a clock, a random source or the environment.

pub mod aggregate;
pub mod error;
pub mod event;
pub mod identity;
pub mod parse;
pub mod reconcile;
pub mod resource;
pub mod schema;
pub mod status;
pub mod timefmt;
pub mod validate;

pub use error::{ErrorCode, FieldError};
