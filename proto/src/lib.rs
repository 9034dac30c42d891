//! Everything both sides of Quorum share: the `quorum.v1` wire protocol, the peer identity
//! read from a certificate, the TLS configuration built from PEM files, the YAML library, the
//! renderers of etcd.conf and the etcdctl profile from typed fields (the coordinator renders
//! with them for its plans and diffs, the agent for the files it writes), the in-place
//! patchers of Patroni's and vip-manager's configs (used by the agent only), and the exit
//! codes both binaries end with.

pub mod codec;
pub mod exit;
pub mod identity;
pub mod leader;
pub mod logging;
pub mod patch;
pub mod render;
pub mod shutdown;
pub mod tls;
pub mod yaml;

/// Generated protobuf and gRPC code for package `quorum.v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("quorum.v1");
}

/// Largest gRPC message either side accepts (certificates and configs are a few KiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
