//! End-to-end tests.

mod secrets_at_rest;
mod store_conformance;
