//! Support code for the end-to-end tests in `it/`: an in-process relayd on a real socket
//! ([`app`]), the real binaries ([`daemon`]), HTTP helpers ([`http`]), private redis-server
//! instances ([`redis_server`]) and Redis Clusters ([`redis_cluster`]), a real llama.cpp server
//! ([`llama_server`]), in-process mock upstreams ([`mock_upstream`]), misbehaving upstreams
//! ([`fault_upstream`]), outbound proxies ([`forward_proxy`]), the official client SDKs and Claude
//! Code ([`python`]), a program's screen under a pseudo-terminal ([`terminal`]), a headless
//! Chromium driven over WebDriver ([`browser`]), and what the benchmarks share ([`bench`]). The
//! tests themselves live in `it/`. [`anthropic_upstream`] gives the mock an Anthropic-native
//! surface.

pub mod anthropic_upstream;
pub mod app;
pub mod bench;
pub mod browser;
pub mod daemon;
pub mod family_mock;
pub mod fault_upstream;
pub mod forward_proxy;
pub mod http;
pub mod llama_server;
pub mod mock_upstream;
pub mod python;
pub mod redis_cluster;
pub mod redis_server;
pub mod terminal;
pub mod tmux;
pub mod vllm_window_mock;
