//! kuma-cluster's event log: node transitions and every action with its outcome.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KcEventLog {
    Table,
    Id,
    CreatedAt,
    Kind,
    NodeId,
    Outcome,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KcEventLog::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(KcEventLog::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KcEventLog::CreatedAt).date_time().not_null())
                    .col(ColumnDef::new(KcEventLog::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(KcEventLog::NodeId).string_len(255).null())
                    .col(ColumnDef::new(KcEventLog::Outcome).string_len(16).not_null())
                    .col(ColumnDef::new(KcEventLog::Detail).text().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KcEventLog::Table).if_exists().to_owned())
            .await
    }
}
