//! Types shared by `relayd` and `relayctl`.
//!
//! Module map:
//! - [`account`]: upstream accounts (one deployment on one endpoint) and their defaults.
//! - [`key`]: relay API keys, the credentials clients present to relayd.
//! - [`usage`]: per-request usage records and aggregated totals.
//! - [`import`]: the batch-import file format users already have, with row- and field-precise validation.
//! - [`admin`]: request and response bodies of the admin API (`/admin/v1/...`).
//! - [`error`]: the admin API's error body.
//! - [`profile`]: what probing an upstream found, and the values requests use.
//! - [`time`]: timestamps as Unix milliseconds.
//!
//! Everything here is plain data with serde derives: no I/O, no async, so both binaries
//! (and the tests) agree on the wire format by construction.

pub mod account;
pub mod admin;
pub mod error;
pub mod import;
pub mod key;
pub mod profile;
pub mod time;
pub mod usage;
