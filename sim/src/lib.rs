//! A Proxmox VE 9.1 API simulator strict enough that passing against it means passing against
//! PVE: HTTPS, PVE's auth and error shapes, schema validation of every request, and a modelled
//! cluster whose started guests run on a pluggable [`backend::GuestBackend`]. See README.md.

pub mod auth;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod faults;
pub mod guest;
pub mod http;
pub mod node_ssh;
pub mod schema;
pub mod sim;
pub mod tls;

pub use backend::{ApiOnlyBackend, CloudInitSeed, GuestBackend, GuestKind, GuestStart};
pub use config::{ClusterSpec, NodeSpec, NodeSshConfig, SimConfig, StorageKind, StorageSpec, TemplateSpec, Timing, TokenSpec, UserSpec};
pub use faults::{DropWhen, Faults};
pub use sim::{SimHandle, Simulator};
