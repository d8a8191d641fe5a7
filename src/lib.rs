//! pvedeploy: deploy apps from git onto Proxmox VE. The library behind the `pvedeploy` binary (and the tests).

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod core;
pub mod discord;
pub mod engine;
pub mod export;
pub mod github;
pub mod http;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod pve;
pub mod remote;
pub mod ssh;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod webhooks;
