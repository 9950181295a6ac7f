//! Formerly created a minimal `monitor` table, or added the ownership columns
//! to Kuma's. kuma-cluster no longer creates or alters Kuma's tables: the
//! cluster-patched nodes create `monitor` with `node_id` and `assigned_node`
//! themselves, and their migrations fail on a table that exists already. The
//! migration stays, empty, so databases that applied it stay valid.

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
