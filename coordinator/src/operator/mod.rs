//! The operator's side: `quorum`'s commands, from flags to a typed request, and the plans,
//! runs and statuses the coordinator answers, printed.

pub mod cli;
pub mod client;
pub mod inventory;
pub mod runs;
pub mod snapshot;
pub mod status;
