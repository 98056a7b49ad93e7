//! Embedded redb backend (placeholder).
