//! relayd: a self-hosted relay that lets Anthropic-API clients (Claude Code) and OpenAI-API clients
//! use OpenAI-compatible and Azure OpenAI upstreams.
//!
//! Module map:
//! - [`crypto`]: encryption of upstream secrets at rest.
//! - [`store`]: persistence trait and its embedded (redb) and Redis backends.

pub mod crypto;
pub mod store;
pub mod translate;
