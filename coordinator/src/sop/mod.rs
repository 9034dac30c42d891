//! The SOP core: a typed request becomes a plan, the plan a stored run, and the runner walks
//! its steps, guarded and gated.

pub mod agreement;
pub mod db;
pub mod gates;
pub mod lease;
pub mod plan;
pub mod planning;
pub mod request;
pub mod runner;
pub mod snapshot;
pub mod status;
pub mod store;
#[doc(hidden)]
pub mod store_suite;
pub mod wait;
