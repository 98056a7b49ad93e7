//! Redis backend (placeholder).
