//! The SOP core: a typed request becomes a plan, the plan a stored run, and the runner walks
//! its steps, guarded and gated.

pub mod agreement;
pub mod gates;
pub mod plan;
pub mod planning;
pub mod request;
pub mod runner;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod wait;
