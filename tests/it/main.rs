//! End-to-end tests: relayd over real sockets (in-process or the real binary), mock upstreams,
//! private redis-server instances. One test binary, modules by area.

mod admin_api;
mod client_auth;
mod relayctl;
mod secrets_at_rest;
mod startup;
mod store_conformance;
