//! Administrative node states (drain, maintenance) kept apart from probe health,
//! and the pin flag of manual moves.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KcNodeAdmin {
    Table,
    NodeId,
    State,
    Since,
}

#[derive(DeriveIden)]
enum KcMoveLedger {
    Table,
    Pinned,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KcNodeAdmin::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(KcNodeAdmin::NodeId).string_len(50).not_null().primary_key())
                    .col(ColumnDef::new(KcNodeAdmin::State).string_len(16).not_null())
                    .col(ColumnDef::new(KcNodeAdmin::Since).date_time().not_null())
                    .to_owned(),
            )
            .await?;
        if !manager.has_column("kc_move_ledger", "pinned").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(KcMoveLedger::Table)
                        .add_column(ColumnDef::new(KcMoveLedger::Pinned).boolean().not_null().default(false))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("kc_move_ledger", "pinned").await? {
            manager
                .alter_table(Table::alter().table(KcMoveLedger::Table).drop_column(KcMoveLedger::Pinned).to_owned())
                .await?;
        }
        manager.drop_table(Table::drop().table(KcNodeAdmin::Table).if_exists().to_owned()).await
    }
}
