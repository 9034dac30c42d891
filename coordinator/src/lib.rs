//! The Quorum coordinator: PKI, the gRPC server agents pull from, the inventory and renderers,
//! the SOP planner and runner, and the operator CLI that drives them.

pub mod adhoc;
pub mod agreement;
pub mod cli;
pub mod cli_runs;
pub mod cli_snapshot;
pub mod client;
pub mod config;
pub mod etcd;
pub mod gates;
pub mod inventory;
pub mod inventory_cli;
pub mod limit;
pub mod listener;
pub mod patroni;
pub mod pki;
pub mod plan;
pub mod registry;
pub mod render;
pub mod request;
pub mod runner;
pub mod server;
pub mod snapshot;
pub mod sop;
pub mod statedir;
pub mod status;
pub mod cli_status;
pub mod store;
pub mod wait;
pub mod words;
