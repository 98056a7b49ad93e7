//! Support code for the end-to-end tests in `it/`: spawning the real binaries, private
//! redis-server instances and in-process mock upstreams. The tests themselves live in `it/`.

pub mod redis_server;
