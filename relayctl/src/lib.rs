//! relayctl library.
