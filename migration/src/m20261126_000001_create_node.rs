//! The `node` table, created only where the Kuma nodes have not created it yet.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Column names are fixed by the Kuma nodes' schema, prefix and all.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum Node {
    Table,
    NodeId,
    NodeName,
    Location,
    Host,
    Hostname,
    Status,
    Active,
    IsPrimary,
    CreatedDate,
    ModifiedDate,
    LastSeen,
}

const INDEXED: [(&str, Node); 4] = [
    ("idx_node_node_name", Node::NodeName),
    ("idx_node_status", Node::Status),
    ("idx_node_active", Node::Active),
    ("idx_node_is_primary", Node::IsPrimary),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_table("node").await? {
            return Ok(());
        }
        manager
            .create_table(
                Table::create()
                    .table(Node::Table)
                    .col(ColumnDef::new(Node::NodeId).string_len(50).not_null().primary_key())
                    .col(ColumnDef::new(Node::NodeName).string_len(100).not_null())
                    .col(ColumnDef::new(Node::Location).string_len(200).null())
                    .col(ColumnDef::new(Node::Host).string_len(45).null())
                    .col(ColumnDef::new(Node::Hostname).string_len(100).null())
                    .col(ColumnDef::new(Node::Status).string_len(20).default("online"))
                    .col(ColumnDef::new(Node::Active).boolean().default(true))
                    .col(ColumnDef::new(Node::IsPrimary).boolean().default(false))
                    .col(ColumnDef::new(Node::CreatedDate).timestamp().default(Expr::current_timestamp()))
                    .col(ColumnDef::new(Node::ModifiedDate).timestamp().default(Expr::current_timestamp()))
                    .col(ColumnDef::new(Node::LastSeen).timestamp().default(Expr::current_timestamp()))
                    .to_owned(),
            )
            .await?;
        for (name, column) in INDEXED {
            manager
                .create_index(Index::create().name(name).table(Node::Table).col(column).to_owned())
                .await?;
        }
        Ok(())
    }

    /// The table is shared with the Kuma nodes, which cannot run without it, so
    /// rolling kuma-cluster back leaves it in place.
    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
