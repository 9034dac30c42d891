//! The Quorum agent: a small daemon on every etcd / PostgreSQL host that pulls typed tasks
//! from the coordinator over mutual TLS, runs them against paths and units fixed in its own
//! config, journals their outcomes, and reports back.

pub mod backend;
pub mod certs;
pub mod config;
pub mod datadir;
pub mod enroll;
pub mod etcd_health;
pub mod executor;
pub mod files;
pub mod journal;
pub mod local;
pub mod pull;
pub mod wal;
