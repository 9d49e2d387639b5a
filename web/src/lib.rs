//! Amdahl web: the HTTP API and the web UI, served by `amdahl web`.
//!
//! **Not built yet.** This crate exists so the workspace has its final shape; it has no
//! routes, no server and no UI. The API and UI arrive with the web issue, on top of
//! `amdahl-scheduler`'s store.

/// What this crate provides today: nothing but its own description.
pub const STATUS: &str = "not built yet: the web UI and REST API are planned, not implemented";
