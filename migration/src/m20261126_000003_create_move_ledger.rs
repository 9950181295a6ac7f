//! kuma-cluster's record of why each monitor was moved.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KcMoveLedger {
    Table,
    Id,
    MonitorId,
    FromNode,
    ToNode,
    Reason,
    CreatedAt,
    UndoneAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KcMoveLedger::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(KcMoveLedger::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(KcMoveLedger::MonitorId).unsigned().not_null())
                    .col(ColumnDef::new(KcMoveLedger::FromNode).string_len(255).null())
                    .col(ColumnDef::new(KcMoveLedger::ToNode).string_len(255).not_null())
                    .col(ColumnDef::new(KcMoveLedger::Reason).string_len(16).not_null())
                    .col(ColumnDef::new(KcMoveLedger::CreatedAt).date_time().not_null())
                    .col(ColumnDef::new(KcMoveLedger::UndoneAt).date_time().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_kc_move_ledger_open")
                    .table(KcMoveLedger::Table)
                    .col(KcMoveLedger::UndoneAt)
                    .col(KcMoveLedger::MonitorId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(KcMoveLedger::Table).if_exists().to_owned())
            .await
    }
}
