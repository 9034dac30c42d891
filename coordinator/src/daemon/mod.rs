//! The daemon's edge: who is calling (the certificate's identity), what they may do, and the
//! answers; the TLS listener and its limits.

pub mod adhoc;
pub mod leader;
pub mod limit;
pub mod listener;
pub mod metrics;
pub mod monitoring;
pub mod revocation;
pub mod server;
