//! Formerly created Kuma's `node` table on a database the nodes had not set up
//! yet. kuma-cluster no longer creates Kuma's tables: the nodes' own migrations
//! fail when one exists already, and a kuma-cluster that starts first (the
//! usual order in a container deployment) must not break them. The migration
//! stays, empty, so databases that applied it stay valid.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
