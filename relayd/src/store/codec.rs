//! Record encoding shared by the backends (placeholder).
