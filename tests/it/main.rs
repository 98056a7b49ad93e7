//! End-to-end tests: relayd over real sockets (in-process or the real binary), mock upstreams,
//! private redis-server instances, the official Python SDKs and Claude Code itself. One test
//! binary, modules by area.

mod accounting;
mod admin_api;
mod affinity;
mod claude_code;
mod claude_code_compaction;
mod claude_code_tui;
mod client_auth;
mod connections;
mod context_window;
mod cooldown_reset;
mod coordinator_conformance;
mod endpoint_policy;
mod faults;
mod fleet;
mod llama;
mod llama_cache;
mod llama_window;
mod metrics;
mod model_labels;
mod native;
mod native_llama;
mod operations;
mod probe;
mod profiles;
mod redis_cluster;
mod relay;
mod relayctl;
mod routing;
mod sdk;
mod secrets_at_rest;
mod startup;
mod store_conformance;
mod test_endpoint;
mod top;
mod ui;
mod usage;
mod usage_store;
