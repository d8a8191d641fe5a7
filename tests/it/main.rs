//! The one integration-test binary: starts the real app on port 0 with a temporary database and talks HTTP.

mod agents;
mod api;
mod cli;
mod crash;
mod dashboard;
mod disk;
mod deploy;
mod discord;
mod export;
mod helpers;
mod ownership;
mod parity;
mod persistence;
mod provision;
mod remote_db;
mod rig;
mod schedules;
mod snapshots;
mod pve;
mod schemathesis;
mod sse;
mod ssh;
mod store;
mod tidy;
mod validation;
mod webhooks;
