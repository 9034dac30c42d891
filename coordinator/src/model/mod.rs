//! The model under everything: Pigsty's inventory, the files rendered from it, the
//! coordinator's config, its PKI and state dir, and the words shown for enums.

pub mod config;
pub mod inventory;
pub mod metrics;
pub mod metrics_text;
pub mod pigsty;
pub mod pki;
pub mod render;
pub mod statedir;
pub mod words;
