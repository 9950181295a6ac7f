//! SeaORM entities for the tables kuma-cluster reads or writes.
//!
//! `node` and `monitor` belong to the Kuma nodes: only the columns the supervisor
//! reads or writes are mapped, so Kuma's other columns are never touched.
//! `move_ledger` and `event_log` are kuma-cluster's own tables.

pub mod event_log;
pub mod monitor;
pub mod move_ledger;
pub mod node;
pub mod node_admin;
pub mod prelude;
