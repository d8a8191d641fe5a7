//! The domain: deployments, their names and limits, status transitions and commands. No I/O, no wire formats.

pub mod addresses;
pub mod audit;
pub mod backup;
pub mod check;
pub mod cloud_init;
pub mod command;
pub mod delivery;
pub mod deployment;
pub mod glob;
pub mod host_key;
pub mod limits;
pub mod listing;
pub mod log;
pub mod names;
pub mod ownership;
pub mod placement;
pub mod preview;
pub mod provision;
pub mod reconcile;
pub mod release;
pub mod schedule;
pub mod snapshot;
pub mod repo;
pub mod status;
pub mod validation;
pub mod webhook;
