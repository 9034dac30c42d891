//! The Quorum coordinator, in the order data travels through it. Each group imports only from
//! the groups below it (checked by `tests/layers.rs`).
//!
//! **The operator's side** ([`operator`]): flags → a typed request → the coordinator → printed
//! plans, runs and exit codes.
//! - [`operator::cli`]: every `quorum` command and its flags; [`operator::runs`]: start an
//!   SOP, confirm wipes, follow a run, `run list|show`; [`operator::snapshot`],
//!   [`operator::status`], [`operator::inventory`] (`inventory check`, `render`);
//!   [`operator::client`]: the mTLS connection to the coordinator.
//!
//! **The daemon's edge** ([`daemon`]): identity in, status out.
//! - [`daemon::server`]: the gRPC services (agents' sessions, the admin API), who may call
//!   what; [`daemon::listener`] and [`daemon::limit`]: TLS accept, connection caps, rate
//!   limits; [`daemon::adhoc`]: `quorum task` outside any SOP.
//!
//! **The SOP core** ([`sop`]): request → plan → stored run → walked steps.
//! - [`sop::request`]: the typed request of each SOP; [`sop::planning`]: reads the inventory
//!   and the live state and calls the planner; [`sop::plan`]: the pure planner, every
//!   [`sop::plan::StepKind`] with what runs it ([`sop::plan::StepKind::executor`]);
//!   [`sop::agreement`]: inventory against etcd's member list; [`sop::store`]: runs, steps
//!   and locks in SQLite; [`sop::runner`]: walks a stored run, and its `exec_step` dispatches
//!   each step to its agent task or coordinator action; [`sop::gates`] and [`sop::wait`]: what
//!   each guard and gate decides, and the one bounded wait they use; [`sop::snapshot`]:
//!   snapshots before destruction; [`sop::status`]: `cluster status`'s answer.
//!
//! **Clients** ([`clients`]): [`clients::etcd`] (the etcd API, errors classified),
//! [`clients::patroni`] (Patroni's REST API), [`clients::registry`] (the connected agents,
//! their facts and task queues).
//!
//! **The model** ([`model`]): [`model::inventory`] (Pigsty's inventory, resolved),
//! [`model::render`] (etcd.conf and the etcdctl profile as Pigsty renders them),
//! [`model::config`], [`model::pki`], [`model::statedir`], [`model::words`].
//!
//! To follow one SOP, say `quorum member add`: `operator::cli` (its flags) →
//! `sop::request::SopRequest::MemberAdd` → `daemon::server` (`start_run`) →
//! `sop::planning` → `sop::plan::plan_member_add` (its steps) → `sop::runner` (`exec_step`,
//! one arm per step kind; `StepKind::executor` names the agent task or coordinator action).

pub mod clients;
pub mod daemon;
pub mod model;
pub mod operator;
pub mod sop;
