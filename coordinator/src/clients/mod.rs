//! What the coordinator talks to: etcd, Patroni's REST API, and the connected agents.

pub mod etcd;
pub mod patroni;
pub mod registry;
