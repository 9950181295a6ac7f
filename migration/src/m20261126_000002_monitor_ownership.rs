//! Per-monitor node ownership. On a Kuma database only the two ownership columns
//! are added, and only where missing; on an empty database a minimal `monitor`
//! table is created so the embedded default works.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Monitor {
    Table,
    Id,
    Name,
    Active,
    NodeId,
    AssignedNode,
}

const NODE_ID_INDEX: &str = "idx_monitor_node_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_table("monitor").await? {
            manager
                .create_table(
                    Table::create()
                        .table(Monitor::Table)
                        .col(
                            ColumnDef::new(Monitor::Id)
                                .unsigned()
                                .not_null()
                                .auto_increment()
                                .primary_key(),
                        )
                        .col(ColumnDef::new(Monitor::Name).string_len(150).null())
                        .col(ColumnDef::new(Monitor::Active).boolean().not_null().default(true))
                        .col(node_id_column())
                        .col(assigned_node_column())
                        .to_owned(),
                )
                .await?;
            return create_node_id_index(manager).await;
        }
        if !manager.has_column("monitor", "node_id").await? {
            manager
                .alter_table(Table::alter().table(Monitor::Table).add_column(node_id_column()).to_owned())
                .await?;
            create_node_id_index(manager).await?;
        }
        if !manager.has_column("monitor", "assigned_node").await? {
            manager
                .alter_table(
                    Table::alter().table(Monitor::Table).add_column(assigned_node_column()).to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    /// The columns carry the cluster's monitor placement, which the Kuma nodes read;
    /// dropping them would strand every monitor, so rolling back leaves them.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

fn node_id_column() -> ColumnDef {
    ColumnDef::new(Monitor::NodeId).string_len(50).null().to_owned()
}

fn assigned_node_column() -> ColumnDef {
    ColumnDef::new(Monitor::AssignedNode).string_len(255).null().to_owned()
}

async fn create_node_id_index(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    if manager.has_index("monitor", NODE_ID_INDEX).await? {
        return Ok(());
    }
    manager
        .create_index(Index::create().name(NODE_ID_INDEX).table(Monitor::Table).col(Monitor::NodeId).to_owned())
        .await
}
