//! Schema migrations for kuma-cluster.
//!
//! They create kuma-cluster's own tables (`kc_*`) only, and only where missing:
//! Kuma's tables belong to the nodes, whose migrations fail when one exists
//! already, so kuma-cluster never creates, alters or drops them. `down` only
//! removes what belongs to kuma-cluster alone.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_node;
mod m20261126_000002_monitor_ownership;
mod m20261126_000003_create_move_ledger;
mod m20261126_000004_create_event_log;
mod m20261126_000005_node_admin_and_pins;
mod m20261207_000006_leader_lease;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_node::Migration),
            Box::new(m20261126_000002_monitor_ownership::Migration),
            Box::new(m20261126_000003_create_move_ledger::Migration),
            Box::new(m20261126_000004_create_event_log::Migration),
            Box::new(m20261126_000005_node_admin_and_pins::Migration),
            Box::new(m20261207_000006_leader_lease::Migration),
        ]
    }
}
